"""Fetching dataset files from their published mirrors, each checked against its published md5."""

from __future__ import annotations

import hashlib
import shutil
import urllib.request
from pathlib import Path

from ..errors import L2LError


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(root: Path, files: dict[str, str], mirrors, timeout: float, offline_hint: str) -> list[Path]:
    """Download each file name of `files` ({name: md5}) into root from the first mirror that has it intact; files
    already there with the right md5 are kept. `offline_hint` says what to do without a network."""
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise L2LError(f"cannot create '{root}' ({e.strerror or e}): set data.root to a writable folder") from None
    done = []
    for name, checksum in files.items():
        target = root / name
        if target.is_file() and md5(target) == checksum:
            done.append(target)
            continue
        errors = []
        for mirror in mirrors:
            tmp = target.with_name(target.name + ".part")
            try:
                with urllib.request.urlopen(mirror + name, timeout=timeout) as r, open(tmp, "wb") as f:
                    shutil.copyfileobj(r, f)
                if md5(tmp) != checksum:
                    raise ValueError("checksum mismatch")
                tmp.replace(target)
                done.append(target)
                break
            except (OSError, ValueError) as e:
                errors.append(f"{mirror}: {getattr(e, 'reason', e)}")
                tmp.unlink(missing_ok=True)
        else:
            raise L2LError(f"could not download {name} ({'; '.join(errors)}). {offline_hint}")
    return done
