"""Compose the run config from `conf/` with Hydra's Compose API, check it, and build objects from it."""

from __future__ import annotations

import importlib.resources

import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.errors import HydraException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .tasks import SPLITS

CONFIG_MODULE = "l2lcli.conf"
GROUPS = ("task", "optimizer", "device")


class L2LError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits with code 2."""


def group_choices(group: str) -> list[str]:
    """The options of a config group, read from the shipped `conf/` package."""
    root = importlib.resources.files(CONFIG_MODULE) / group
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def compose(overrides: list[str] | None = None) -> DictConfig:
    """The resolved config for these Hydra-style overrides; bad overrides raise L2LError."""
    overrides = list(overrides or [])
    for o in overrides:
        if "=" not in o and not o.startswith("~"):
            raise L2LError(f"malformed override '{o}': write key=value, e.g. task=quadratic or train.unroll=20")
        key, _, value = o.partition("=")
        if key.lstrip("+~") in GROUPS and value and value not in group_choices(key.lstrip("+~")):
            choices = ", ".join(group_choices(key.lstrip("+~")))
            raise L2LError(f"unknown {key.lstrip('+~')} '{value}': choose one of {choices}")
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
        OmegaConf.resolve(cfg)
    except MissingConfigException as e:
        raise L2LError(_one_line(e)) from None
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        raise L2LError(f"bad override: {_one_line(e)}") from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def _one_line(e: Exception) -> str:
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    msg = lines[0] if lines else type(e).__name__
    if "is not in struct" in str(e) or "Could not override" in msg:
        msg += " (no such key; add it with '+key=value' only if you mean a new one, see `l2l COMMAND --help`)"
    return msg


def check(cfg: DictConfig, command: str) -> None:
    """Reject configs that would fail later or give meaningless numbers, with one clear line."""
    def positive(path: str, integer: bool = True):
        v = OmegaConf.select(cfg, path)
        if v is None or isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 or (
            integer and int(v) != v
        ):
            kind = "a positive integer" if integer else "a positive number"
            raise L2LError(f"{path}={v} is invalid: it must be {kind}")

    positive("task.steps")
    if command == "meta-train":
        for k in ("batch_size", "unroll", "epoch_trajectories", "max_epochs", "patience", "validation_problems",
                  "max_bad_steps"):
            positive(f"train.{k}")
        positive("train.meta_lr", integer=False)
        positive("train.meta_lr_decay", integer=False)
        if cfg.train.unroll > cfg.task.steps:
            raise L2LError(
                f"train.unroll={cfg.train.unroll} is longer than the horizon task.steps={cfg.task.steps}: "
                "lower train.unroll or raise task.steps")
        if cfg.train.meta_loss not in ("sum", "final", "log_sum", "relative"):
            raise L2LError(f"train.meta_loss={cfg.train.meta_loss} is unknown: choose sum, final, log_sum or relative")
        if cfg.train.grad_clip is not None:
            positive("train.grad_clip", integer=False)
        if cfg.train.time_limit is not None:
            positive("train.time_limit", integer=False)
    if command in ("evaluate", "sweep-baselines", "meta-train"):
        positive("eval.problems")
        if cfg.eval.split not in SPLITS or cfg.eval.split == "train":
            raise L2LError(f"eval.split={cfg.eval.split} is invalid: choose test or validation (training problems "
                           "are for meta-training)")
        if cfg.eval.steps is not None:
            positive("eval.steps")
    if command == "sweep-baselines":
        if cfg.sweep.lr_num is None or cfg.sweep.lr_num < 1 or not cfg.sweep.optimizers:
            raise L2LError("the sweep grid is empty: set sweep.lr_num >= 1 and list sweep.optimizers")
        positive("sweep.lr_num")
        positive("sweep.lr_min", integer=False)
        positive("sweep.lr_max", integer=False)
        if cfg.sweep.lr_max < cfg.sweep.lr_min:
            raise L2LError(f"sweep.lr_max={cfg.sweep.lr_max} is below sweep.lr_min={cfg.sweep.lr_min}")
        known = [c for c in group_choices("optimizer") if is_baseline(c)]
        for name in cfg.sweep.optimizers:
            if name not in known:
                raise L2LError(f"sweep.optimizers has '{name}', not a baseline: choose from {', '.join(known)}")
    if "lr" in cfg.optimizer:
        positive("optimizer.lr", integer=False)
    resolve_device(cfg)


def is_baseline(optimizer_name: str) -> bool:
    """Whether a group option of `optimizer` is a hand-designed baseline (no weights to meta-train)."""
    return str(_option("optimizer", optimizer_name).get("_target_", "")).startswith("l2lcli.baselines.")


def _option(group: str, name: str) -> DictConfig:
    return OmegaConf.create((importlib.resources.files(CONFIG_MODULE) / group / f"{name}.yaml").read_text())


def _reuse_freed_memory() -> None:
    """Keep freed CPU memory in the process (glibc) instead of returning it to the kernel.

    Every optimizer step allocates tensors of megabytes to gigabytes; glibc serves them with fresh mmaps, and the
    page faults that fill them cost up to half of an MNIST evaluation on a virtual machine (docs/results.md).
    """
    import ctypes
    import sys

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
    if name not in ("cpu", "cuda"):
        raise L2LError(f"device.name={name} is unknown: use device=cpu, device=cuda or device=auto")
    if cfg.device.threads:
        torch.set_num_threads(int(cfg.device.threads))
    _reuse_freed_memory()
    compile_ = cfg.device.get("compile", False)
    if not isinstance(compile_, bool):
        raise L2LError(f"device.compile={compile_} is invalid: use device.compile=true or device.compile=false")
    from .learned import fuse

    fuse(compile_, name)
    return torch.device(name)


def build(node: DictConfig, **kwargs):
    """The one way config becomes objects: `_target_` + hydra.utils.instantiate."""
    return instantiate(node, **kwargs, _convert_="all")


def baseline_config(name: str, lr: float | None = None) -> DictConfig:
    """The config of one baseline optimizer, as `optimizer=<name>` would compose it."""
    node = _option("optimizer", name)
    if lr is not None:
        node.lr = float(lr)
    return node
