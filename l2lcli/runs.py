"""The run folder and everything written into it: atomic files, CSVs, checkpoints (and the rules inside them)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from .checkpoints import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_checkpoint
from .config import build
from .errors import L2LError, WriteError, one_line

_UMASK = os.umask(0o022)  # read the process's umask (os has no getter) and put it back
os.umask(_UMASK)
# the command line that started this process's runs (set by the CLI and by each multirun job): kept in command.txt
COMMAND_LINE: str | None = None


def new_run_dir(cfg: DictConfig, command: str, label: str | None = None) -> Path:
    """A fresh folder <out_dir>/<command>/<task>/<timestamp>-<label>[-k]; two runs never share one."""
    label = label or cfg.optimizer.name
    parent = Path(cfg.out_dir) / command / cfg.task.name
    try:
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for k in range(1000):
            path = parent / (f"{stamp}-{label}" + (f"-{k}" if k else ""))
            try:
                path.mkdir()  # atomic: fails if another run took the name first
                break
            except FileExistsError:
                continue
        if not os.access(path, os.W_OK):
            raise PermissionError(path)
    except OSError as e:
        raise L2LError(f"cannot create a run folder under '{parent}' ({e.strerror or e}): set out_dir=PATH "
                       "to a writable folder") from None
    write_text(path / "config.yaml", OmegaConf.to_yaml(cfg))
    if COMMAND_LINE:
        write_text(path / "command.txt", COMMAND_LINE + "\n")
    return path


def atomic(path: Path, write) -> None:
    """Write via a temp file in the same folder and rename: readers see the old file or the new, never half.

    An OS error on the way (disk full, permission lost) is a WriteError naming the file; the old file stays whole.
    """
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; results are for sharing like any other
        os.replace(tmp, path)
    except OSError as e:
        raise WriteError(f"cannot write '{path}' ({e.strerror or one_line(e)}): free disk space or fix the "
                         "folder's permissions; every file finished before it is intact") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: Path, data: bytes) -> None:
    def w(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    atomic(path, w)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_csv(path: Path, df: pd.DataFrame) -> None:
    atomic(path, lambda tmp: df.to_csv(tmp, index=False))


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, default=float) + "\n")


def code_version() -> str:
    from . import __version__
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+{sha}" if sha else __version__


def save_checkpoint(path: Path, cfg: DictConfig, optimizer: torch.nn.Module, **extra) -> None:
    """Weights, the run's config (as YAML text) and the code version, in a file that loads without pickled code."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "code_version": code_version(),
        "config": OmegaConf.to_yaml(cfg),
        "task": cfg.task.name,
        "optimizer_name": cfg.optimizer.name,
        "weights": {k: v.detach().cpu() for k, v in optimizer.state_dict().items()},
        **extra,
    }
    _write_payload(path, payload)


def replace_config(ckpt: dict, cfg: DictConfig) -> None:
    """Rewrite a loaded checkpoint's file with another config (a resumed run's new budget), atomically."""
    _write_payload(Path(ckpt["path"]), {**{k: v for k, v in ckpt.items() if k != "path"},
                                        "config": OmegaConf.to_yaml(cfg)})


def _write_payload(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()  # serialised in memory, so that a failing disk is an OSError of ours, not torch's
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def load_rule(path, node=None):
    """The trained optimizer saved in a meta-train checkpoint (or run folder), built from `node` if given, else
    from the config saved with it."""
    return rule_from(load_checkpoint(path), node)


def rule_from(ckpt: dict, node=None, copies: dict | None = None):
    """The trained optimizer of a loaded checkpoint (see load_rule); `copies` ({net: saved net}) start networks
    the checkpoint lacks as copies of ones it holds (e.g. a net for the first layer, from the hidden layers'); {} when
    fine-tuning, so a net it lacks is named in the error."""
    rule = build(node if node is not None else ckpt["config"].optimizer)
    weights, nets = dict(ckpt["weights"]), list(getattr(rule, "nets", {}))
    saved = sorted({k.split(".")[1] for k in weights if k.startswith("nets.")})
    for net, source in (copies or {}).items():
        if source not in saved or net not in nets:
            raise L2LError(f"train.init_nets copies {source} into {net}: checkpoint '{ckpt['path']}' holds nets "
                           f"{', '.join(saved)}, this optimizer's groups are {', '.join(nets)}")
        prefix = f"nets.{source}."
        weights.update({f"nets.{net}.{k[len(prefix):]}": v for k, v in ckpt["weights"].items() if k.startswith(prefix)})
    lacking = sorted(set(nets) - set(saved) - set(copies or {}))
    if copies is not None and saved and lacking:  # fine-tuning into more groups than the checkpoint had
        raise L2LError(f"checkpoint '{ckpt['path']}' holds nets {', '.join(saved)}, not {', '.join(lacking)} of this "
                       f"optimizer's groups: start each as a copy, e.g. train.init_nets={{{lacking[0]}: {saved[0]}}}")
    try:
        rule.load_state_dict(weights)
    except RuntimeError as e:
        raise L2LError(f"checkpoint '{ckpt['path']}' does not fit optimizer={rule.name} with this config "
                       f"({one_line(e)[:100]})") from None
    return rule.eval()
