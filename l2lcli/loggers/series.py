"""What a logger logs: the figures of the run folder's CSVs as metric series, and the config as flat params.

Every figure comes from a table as it is written to its CSV, so TensorBoard and MLflow show the CSVs' numbers.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import NamedTuple

import pandas as pd
from omegaconf import DictConfig

from ..schema import leaves


class Point(NamedTuple):
    key: str
    value: float
    step: int


class Table(NamedTuple):
    prefix: str
    step: str | None  # the column that is the step; None: the row's place in its series (a sweep's lr index)
    columns: tuple[str, ...]


# The CSVs each command writes, as series named <prefix>[/<variant>][/<optimizer>]/<column>.
TABLES = {
    "train_log.csv": Table("train", "epoch", ("meta_loss", "val_loss", "best_val_loss", "meta_lr", "bad_steps",
                                              "seconds", "epoch_seconds", "optimizee_steps_per_second")),
    "curves.csv": Table("curve", "step", ("mean_loss", "median_loss")),
    "summary.csv": Table("final", None, ("final_loss", "ratio_to_best_baseline", "ratio_low", "ratio_high",
                                         "ms_per_step", "first_step_ms", "cost_vs_adam")),
    "sweep.csv": Table("sweep", None, ("lr", "final_loss", "diverged_fraction")),
    "best.csv": Table("best", None, ("lr", "final_loss")),
    "generalize.csv": Table("generalize", None, ("learned_final_loss", "best_baseline_final_loss", "ratio",
                                                 "ratio_low", "ratio_high", "sub_final_loss", "sub_ratio")),
}
NAMES = ("variant", "optimizer")  # the columns that name a series


def name_part(text) -> str:
    """A variant or optimizer name as one part of a metric key (MLflow takes letters, digits, _ - . : space)."""
    return re.sub(r"[^\w\-. :]", "_", str(text).replace("=", ":"))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def points(name: str, df: pd.DataFrame, skip: int = 0) -> list[Point]:
    """The figures of CSV `name` (a key of TABLES) after its first `skip` rows (logged before); non-finite ones
    (a diverged baseline) stay in the CSV only."""
    table = TABLES.get(name)
    if table is None:
        return []
    seen, out = Counter(), []
    for i, row in enumerate(df.to_dict("records")):
        key = "/".join([table.prefix, *(name_part(row[c]) for c in NAMES if c in row)])
        step = int(row[table.step]) if table.step else seen[key]
        seen[key] += 1
        if i >= skip:
            out += [Point(f"{key}/{c}", float(row[c]), step) for c in table.columns if c in row and _finite(row[c])]
    return out


def summary_points(results: dict) -> list[Point]:
    """A command's summary.json figures (best epoch, seconds, steps per second ...) as summary/<key> at step 0."""
    return [Point(f"summary/{k}", float(v), 0) for k, v in results.items() if _finite(v)]


def params(cfg: DictConfig) -> dict:
    """The resolved config as dotted keys (task.features.weights): numbers, flags and strings as they are, the rest
    (null, lists, dicts) as text."""
    return {path: v if isinstance(v, (bool, int, float, str)) else text(v) for path, v in leaves(cfg)}


def text(value) -> str:
    """A config value as MLflow shows it: YAML's spelling of nulls and flags."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
