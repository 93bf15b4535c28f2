"""evaluate: an optimizer on fresh test (or validation) problems, against the swept baselines. `run(cfg)`."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config import baseline_config, build
from ..errors import L2LError
from ..plots import plot_curves
from ..rollout import rollout
from ..schema import leaves
from ..stats import bootstrap_ratio
from ..tasks.base import LEARNER_KEYS, TRAINING_KEYS
from .common import Setup, load_optimizer, prepare


def problem_key(cfg: DictConfig) -> dict:
    """What decides the evaluation problems: the task's keys (not those only learned optimizers or meta-training
    read, nor the data folder), the split, the seed, how many and how many steps."""
    # nested keys one by one (task.features.weights), so a key added later to a nested group is one key
    skip = {f"task.{k}" for k in (*LEARNER_KEYS, *TRAINING_KEYS, "root", "_target_")}
    task = {path: v for path, v in leaves(cfg.task, "task.") if path not in skip}
    steps = OmegaConf.select(cfg, "eval.steps") or cfg.task.steps
    return {**task, "eval.split": OmegaConf.select(cfg, "eval.split", default="test"), "eval.seed": cfg.eval.seed,
            "eval.problems": cfg.eval.problems, "eval.steps": steps}


def load_baselines(cfg: DictConfig) -> pd.DataFrame:
    """Best learning rates from a sweep-baselines run, refused unless it was swept on these very problems."""
    path = Path(cfg.eval.baselines)
    csv = path / "best.csv" if path.is_dir() else path
    if not csv.is_file():
        raise L2LError(f"baselines '{path}' not found: pass a sweep-baselines run folder or its best.csv")
    saved = csv.parent / "config.yaml"
    if not saved.is_file():
        raise L2LError(f"baselines '{csv}' has no config.yaml beside it, so what it was swept on is unknown: pass the "
                       "sweep-baselines run folder")
    why = mismatch(problem_key(OmegaConf.load(saved)), problem_key(cfg))
    if why:
        raise L2LError(f"baselines '{path}' were swept {why}")
    return read_best(csv)


def mismatch(swept: dict, here: dict) -> str | None:
    """How a sweep's problems differ from these (None: the same problems), as the end of an error line."""
    if swept["task.name"] != here["task.name"]:
        return f"on task={swept['task.name']}, not {here['task.name']}"
    if swept["eval.split"] != here["eval.split"]:
        return (f"on {swept['eval.split']} problems, not eval.split={here['eval.split']}: sweep again with "
                f"eval.split={here['eval.split']}")
    # a key one side lacks was added to l2l after that run, at a default that kept its problems the same
    differ = [f"{k}={swept[k]} there, {here[k]} here" for k in sorted(set(swept) & set(here)) if swept[k] != here[k]]
    if differ:
        return (f"on other problems ({'; '.join(differ)}): sweep again with this command's settings, or evaluate "
                "with the sweep's")
    return None


def find_baselines(folder: Path, cfg: DictConfig) -> Path | None:
    """The newest sweep-baselines run under `folder` (or `folder` itself) swept on cfg's very problems, with cfg's
    baselines and learning-rate grid: a sweep with fewer baselines or another grid would make the best baseline
    weaker than this command's own sweep. Runs whose config cannot be read are passed over."""
    here, grid = problem_key(cfg), OmegaConf.to_container(cfg.sweep, resolve=True)
    found = []
    for csv in Path(folder).rglob("best.csv"):
        try:
            saved = OmegaConf.load(csv.parent / "config.yaml")
            swept = problem_key(saved)
            same = (set(here) <= set(swept) and mismatch(swept, here) is None  # every key: an older run may lack one
                    and OmegaConf.to_container(saved.sweep, resolve=True) == grid)
        except (OSError, KeyError, ValueError, yaml.YAMLError, OmegaConfBaseException):  # unreadable, or not ours
            continue
        if same:
            found.append((csv.stat().st_mtime_ns, csv.parent))
    return max(found)[1] if found else None


def read_best(csv: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(csv)[["optimizer", "lr"]]
    except (ValueError, KeyError, pd.errors.ParserError) as e:
        raise L2LError(f"baselines '{csv}' is not a best.csv written by sweep-baselines ({e})") from None


def curve_frame(name: str, lr, learned: bool, curve: torch.Tensor) -> pd.DataFrame:
    c = curve.double().cpu()
    mean = c.mean(1)
    return pd.DataFrame({"optimizer": name, "lr": lr, "learned": learned, "step": range(len(mean)),
                         "mean_loss": mean.numpy(), "median_loss": c.median(1).values.numpy(),
                         "log10_mean_loss": mean.log10().numpy()})


def race(problems, optimizers: dict, baselines: pd.DataFrame, steps: int):
    """The optimizers ({name: optimizer}) and each baseline at its learning rate on the same problems: a summary row
    each, the curves, and each one's final parameters ({name: params})."""
    runs = [(name, getattr(opt, "lr", math.nan), opt) for name, opt in optimizers.items()]
    runs += [(b.optimizer, b.lr, build(baseline_config(b.optimizer, b.lr))) for b in baselines.itertuples()]
    curves, rows, finals, params = [], [], [], {}
    for row, (label, lr, opt) in enumerate(runs):
        curve, seconds, params[label], first = rollout(problems, opt, steps)
        curves.append(curve_frame(label, lr, opt.learned, curve))
        finals.append(pd.DataFrame({"row": row, "optimizer": label, "problem": range(curve.shape[1]),
                                    "final_loss": curve[-1].double().cpu().numpy()}))
        final = curve[-1].double().mean().item()
        rows.append({"optimizer": label, "lr": lr, "learned": opt.learned, "final_loss": final,
                     "log10_final_loss": math.log10(final) if final > 0 else math.nan,
                     "diverged": not math.isfinite(final), "ms_per_step": 1e3 * seconds,
                     "first_step_ms": 1e3 * first})  # warm steps only in ms_per_step; compiling is in the first
    summary = pd.DataFrame(rows)
    base = summary[~summary["learned"] & ~summary["diverged"]]
    best_base = base["final_loss"].min() if len(base) else math.nan
    summary["ratio_to_best_baseline"] = summary["final_loss"] / best_base
    finals = pd.concat(finals, ignore_index=True)
    if len(base):  # a 95% bootstrap interval of each ratio, over the problems
        ref = finals[finals["row"] == base["final_loss"].idxmin()]["final_loss"]
        cis = [bootstrap_ratio(finals[finals["row"] == row]["final_loss"], ref)[1:] for row in summary.index]
        summary["ratio_low"], summary["ratio_high"] = [c[0] for c in cis], [c[1] for c in cis]
    adam = summary.loc[summary["optimizer"] == "adam", "ms_per_step"]
    summary["cost_vs_adam"] = summary["ms_per_step"] / adam.iloc[0] if len(adam) else math.nan
    summary.attrs["finals"] = finals  # per problem
    return summary, pd.concat(curves, ignore_index=True), params


def run(cfg: DictConfig) -> dict:
    """Run the optimizer (and the best baselines) on cfg.eval.problems fresh problems of cfg.eval.split."""
    setup: Setup = prepare(cfg, "evaluate")
    optimizer = load_optimizer(setup)
    baselines = load_baselines(cfg) if cfg.eval.baselines else pd.DataFrame(columns=["optimizer", "lr"])
    problems = setup.problems()
    run_dir = setup.open_run("evaluate")
    with setup.log as log:
        summary, curves, finals = race(problems, {cfg.optimizer.name: optimizer}, baselines, setup.steps)
        log.write_csv(run_dir / "curves.csv", curves)
        log.write_csv(run_dir / "summary.csv", summary)
        log.write_csv(run_dir / "finals.csv", summary.attrs["finals"])
        plot_curves(curves, run_dir / "curves.png", f"{cfg.task.name}: {cfg.eval.problems} {cfg.eval.split} problems")
        problems.pictures(finals, run_dir / "images.png")  # where the task has pictures (art: Figure 8's grid)
        results = {"command": "evaluate", "run_dir": str(run_dir), "task": cfg.task.name,
                   "data": setup.task.describe(), "steps": setup.steps, "split": cfg.eval.split,
                   "eval_seed": cfg.eval.seed, "problems": cfg.eval.problems, "checkpoint": cfg.eval.checkpoint,
                   "rows": summary.to_dict("records")}
        log.write_json(run_dir / "summary.json", results)
    return {**results, "table": summary, "loggers": log.report()}
