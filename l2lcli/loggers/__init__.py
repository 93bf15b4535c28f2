"""The `logger` config group: CSVs always, TensorBoard and MLflow on request (`open_loggers`)."""

from __future__ import annotations

from omegaconf import DictConfig

from .base import PARENT, Loggers

__all__ = ["PARENT", "Loggers", "open_loggers"]


def open_loggers(cfg: DictConfig, command: str, data: dict | None = None) -> Loggers:
    """The loggers `cfg.logger` chooses, each checked now (its extra installed, its server reachable): a logger that
    cannot work stops the command before any work."""
    node = cfg.get("logger") or {}  # a config saved before loggers existed: the folder's files only
    backends = []
    if "tensorboard" in node:
        from .tensorboard import TensorBoard
        backends.append(TensorBoard(node.tensorboard))
    if "mlflow" in node:
        from .mlflow import MLflow
        backends.append(MLflow(cfg, node.mlflow, command))
    return Loggers(cfg, command, data or {}, backends)
