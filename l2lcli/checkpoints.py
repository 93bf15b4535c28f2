"""Reading checkpoint files: one place that checks their format and version (runs.py writes them). Imports nothing
of l2l's but its errors, so that composing a config can read a run's saved one (config.resumed)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .errors import L2LError, one_line

CHECKPOINT_FORMAT = "l2l-checkpoint"
CHECKPOINT_VERSION = 1


def load_checkpoint(path) -> dict:
    """A checkpoint's contents, loaded with weights_only=True (no code runs); any problem is one L2LError.

    A command reads each checkpoint file once: the contents are kept while the file is unchanged.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise L2LError(f"checkpoint '{path}' not found: pass a best.pt / last.pt file or a meta-train run folder")
    st = path.stat()
    ckpt = copy.deepcopy(_read_checkpoint(str(path.resolve()), st.st_mtime_ns, st.st_size))  # callers may edit
    ckpt["config"] = OmegaConf.create(ckpt["config"])
    ckpt["path"] = str(path)
    return ckpt


def last_checkpoint(path) -> dict:
    """The checkpoint a killed or finished run resumes from: its folder's last.pt (or that file)."""
    path = Path(path)
    ckpt = load_checkpoint(path / "last.pt" if path.is_dir() else path)
    if "train_state" not in ckpt:
        raise L2LError(f"'{ckpt['path']}' holds no training state (best.pt cannot resume): pass the run folder "
                       "or its last.pt")
    return ckpt


@functools.lru_cache(maxsize=4)
def _read_checkpoint(path: str, mtime_ns: int, size: int) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zips, pickles with code, foreign files: all refused the same way
        raise L2LError(f"checkpoint '{path}' is corrupt or not an l2l checkpoint ({one_line(e)[:120]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise L2LError(f"'{path}' is not an l2l checkpoint: pass a file written by `l2l meta-train`")
    if ckpt.get("version") != CHECKPOINT_VERSION:
        raise L2LError(f"checkpoint '{path}' has format version {ckpt.get('version')}, this l2l reads "
                       f"{CHECKPOINT_VERSION}: re-run meta-train with this version")
    return ckpt
