"""The IDX format of MNIST and Fashion-MNIST (plain or gzipped)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..errors import L2LError
from .splits import Split, from_uint8

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
VALIDATION = 10000  # the last images of a 60k training file validate


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (plain or .gz) as a uint8 array of its declared shape."""
    path = Path(path)
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


def find(root: Path, name: str) -> Path | None:
    """`root/name` or `root/name.gz`, whichever exists."""
    return next((p for p in (root / name, root / f"{name}.gz") if p.is_file()), None)


def has_files(root: Path) -> bool:
    return all(find(root, n) for n in FILES)


def idx_splits(root: Path, what: str, missing_hint: str) -> dict[str, Split]:
    """Train / validation / test from the four standard IDX files of MNIST-format datasets in `root`; the last
    10,000 training images (a sixth of a smaller file) validate."""
    files = {n: find(root, n) for n in FILES}
    missing = [n for n, p in files.items() if p is None]
    if missing:
        raise L2LError(f"{what} IDX files missing in '{root}': {', '.join(missing)}. {missing_hint}")
    train, test = (from_uint8(read_idx(files[f"{p}-images-idx3-ubyte"]), read_idx(files[f"{p}-labels-idx1-ubyte"]),
                              (1, 28, 28), what) for p in ("train", "t10k"))
    v = min(VALIDATION, len(train.labels) // 6)
    return {"train": Split(train.images[:-v], train.labels[:-v]),
            "validation": Split(train.images[-v:], train.labels[-v:]), "test": test}
