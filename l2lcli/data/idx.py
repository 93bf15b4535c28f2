"""The IDX format of MNIST and Fashion-MNIST (plain or gzipped)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..errors import L2LError


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
