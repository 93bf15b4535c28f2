"""The `logger` config group: CSVs always, TensorBoard and MLflow on request (`open_loggers`)."""

from __future__ import annotations

from omegaconf import DictConfig
from rich.markup import escape

from ..errors import L2LError
from .base import PARENT, Loggers, console

__all__ = ["PARENT", "Loggers", "open_loggers"]


def open_loggers(cfg: DictConfig, command: str, data: dict | None = None, experiment: str | None = None) -> Loggers:
    """The loggers `cfg.logger` chooses, each checked now (its extra installed, its server reachable): a logger that
    cannot work stops the command before any work. `experiment`: MLflow's, where not <command>/<task> (a multirun
    of meta-train runs is a parent run among them, in meta-train/<task>)."""
    from .mlflow import MLflow
    from .tensorboard import TensorBoard

    node = cfg.get("logger") or {}  # a config saved before loggers existed: the folder's files only
    backends, failed = [], {}
    for name, make in (("tensorboard", lambda: TensorBoard(node.tensorboard)),
                       ("mlflow", lambda: MLflow(cfg, node.mlflow, command, experiment))):
        if name not in node:
            continue
        try:
            backends.append(make())
        except L2LError as e:
            if not PARENT.get():  # a command of its own: refused before any work
                raise
            # a later command of `l2l experiment`: its first ones ran; this one runs too, without that logger
            failed[name] = f"start: {e}"
            console.print(escape(f"{name} logging skipped for {command} ({e})"), style="yellow", soft_wrap=True)
    return Loggers(cfg, command, data or {}, backends, failed)
