"""CIFAR-10 from its standard archives: the binary version (records of 1 label byte + 3,072 pixel bytes) or the
python version (pickled dicts, read by an unpickler that accepts nothing but the numpy arrays they hold)."""

from __future__ import annotations

import importlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from ..errors import L2LError
from .download import fetch
from .splits import Split, describe, from_uint8

ARCHIVES = {  # archive -> (folder inside it, md5 published with the dataset)
    "cifar-10-binary.tar.gz": ("cifar-10-batches-bin", "c32a1d4ab5d03f1284b67883e8d87530"),
    "cifar-10-python.tar.gz": ("cifar-10-batches-py", "c58f30108f718f92721af3b95e74349a"),
}
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
TEST = "test_batch"
SHAPE = (3, 32, 32)
VALIDATION = 5000  # the last training images validate
RECORD = 1 + 3072
HOW = ("Run `l2l data download cifar10 data.root={root}` where a network exists, or put cifar-10-binary.tar.gz or "
       "cifar-10-python.tar.gz (or their extracted folders) in '{root}'; without CIFAR-10, use "
       "task.dataset=fashion_mnist")


def read_binary(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One file of the binary version: images [n, 3072] and labels [n]."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD:
        raise L2LError(f"'{path}' is not a CIFAR-10 binary batch ({raw.size} bytes, not a multiple of {RECORD}): "
                       "delete it and download again")
    records = raw.reshape(-1, RECORD)
    if records[:, 0].max() > 9:
        raise L2LError(f"'{path}' is not a CIFAR-10 binary batch (a label above 9): delete it and download again")
    return records[:, 1:], records[:, 0]


class _ArraysOnly(pickle.Unpickler):
    """Unpickles the python version's dicts and numpy arrays, and refuses every other global: a crafted archive can
    name a function to call when unpickled, and this never looks one up."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        if module == "_codecs":
            return importlib.import_module("codecs").encode
        if name == "_reconstruct":  # numpy 2 moved numpy.core to numpy._core
            return importlib.import_module("numpy._core.multiarray" if hasattr(np, "_core") else module)._reconstruct
        return getattr(np, name)


def read_python(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One file of the python version: images [n, 3072] and labels [n]."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(io.BytesIO(f.read()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data) or labels.max() > 9:
            raise ValueError(f"data {data.shape}, {len(labels)} labels")
    except (OSError, EOFError, KeyError, TypeError, ValueError, IndexError, pickle.UnpicklingError) as e:
        raise L2LError(f"'{path}' is not a CIFAR-10 python batch ({e}): delete it and download again") from None
    return data, labels


def _extract(archive: Path, root: Path) -> None:
    """Unpack a CIFAR-10 archive into root, refusing links and paths that leave it."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):  # Python 3.10.12+, 3.11.4+
                tar.extractall(root, filter="data")
            else:
                for member in tar.getmembers():
                    if not (member.isfile() or member.isdir()) or member.name.startswith("/") or ".." in member.name:
                        raise tarfile.TarError(f"refused member {member.name!r}")
                tar.extractall(root)
    except (OSError, EOFError, tarfile.TarError) as e:
        raise L2LError(f"'{archive}' is not a readable CIFAR-10 archive ({e}): delete it and download again") from None


def load_cifar10(root: str | Path) -> tuple[dict[str, Split], dict]:
    """CIFAR-10 from `root`: the binary version's folder, else the python version's, else either archive
    (extracted first). Train 45,000 / validation 5,000 (the last training images) / test 10,000."""
    root = Path(root)
    for archive, (folder, _) in ARCHIVES.items():
        if not (root / folder).is_dir() and (root / archive).is_file():
            _extract(root / archive, root)
    if (root / "cifar-10-batches-bin").is_dir():
        folder, read, suffix = root / "cifar-10-batches-bin", read_binary, ".bin"
    elif (root / "cifar-10-batches-py").is_dir():
        folder, read, suffix = root / "cifar-10-batches-py", read_python, ""
    else:
        raise L2LError(f"CIFAR-10 not found in '{root}'. " + HOW.format(root=root))
    missing = [n for n in (*TRAIN, TEST) if not (folder / f"{n}{suffix}").is_file()]
    if missing:
        raise L2LError(f"CIFAR-10 files missing in '{folder}': {', '.join(missing)}. " + HOW.format(root=root))
    parts = [read(folder / f"{n}{suffix}") for n in TRAIN]
    train = from_uint8(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), SHAPE,
                       "CIFAR-10")
    test = from_uint8(*read(folder / f"{TEST}{suffix}"), SHAPE, "CIFAR-10")
    v = min(VALIDATION, len(train.labels) // 10)
    splits = {"train": Split(train.images[:-v], train.labels[:-v]),
              "validation": Split(train.images[-v:], train.labels[-v:]), "test": test}
    source = "cifar10-binary" if suffix else "cifar10-python"
    return splits, describe(source, str(folder.resolve()), splits)


def download_cifar10(root: str | Path, mirrors=None, archive: str = "cifar-10-binary.tar.gz",
                     timeout: float = 60) -> list[Path]:
    """Fetch a CIFAR-10 archive into root, checking its published md5."""
    folder, md5 = ARCHIVES[archive]
    return fetch(Path(root), {archive: md5}, mirrors or MIRRORS, timeout,
                 f"Without a network, copy {archive} (md5 {md5}) or its folder {folder}/ into '{root}', or use "
                 "task.dataset=fashion_mnist")
