"""The torch device of a run and the process-wide settings that go with it (threads, allocator, compiled cells)."""

from __future__ import annotations

import ctypes
import sys

import torch
from omegaconf import DictConfig

from .errors import L2LError
from .optimizers.cells import fuse


def reuse_freed_memory() -> None:
    """Keep freed CPU memory in the process (glibc) instead of returning it to the kernel.

    Every optimizer step allocates tensors of megabytes to gigabytes; glibc serves them with fresh mmaps, and the
    page faults that fill them cost up to half of an MNIST evaluation on a virtual machine (docs/results.md).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)        # M_MMAP_MAX: serve large blocks from the heap, which is reused
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: do not give the heap's top back after each step
    except (OSError, AttributeError):
        pass  # not glibc: keep the allocator's defaults


def resolve_device(cfg: DictConfig) -> torch.device:
    """The torch device of `cfg.device`, after applying its process-wide settings: threads, memory reuse and
    whether the LSTM cells are compiled. Safe to call more than once."""
    name = cfg.device.name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise L2LError("device=cuda but no CUDA GPU is visible to torch: use device=cpu or device=auto")
    if cfg.device.threads:
        torch.set_num_threads(int(cfg.device.threads))
    reuse_freed_memory()
    fuse(cfg.device.compile, name, cfg.device.get("compile_unroll", 0))  # configs of older runs: never
    return torch.device(name)
