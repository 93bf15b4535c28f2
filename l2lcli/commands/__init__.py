"""One module per command, each with a plain `run(cfg) -> results` that the CLI, multiruns and the tests call."""

from __future__ import annotations

import importlib

MODULES = {"meta-train": "train", "evaluate": "evaluate", "sweep-baselines": "sweep", "generalize": "generalize",
           "experiment": "experiment"}


def runner(command: str):
    """The `run(cfg) -> results` of a command, imported when first asked for (`l2l --help` loads no torch)."""
    return importlib.import_module(f"{__name__}.{MODULES[command]}").run
