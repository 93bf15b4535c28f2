"""Evaluation on fresh test (or validation) problems, against the swept baselines: `run(cfg) -> results`."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from .config import L2LError, baseline_config, build, check, resolve_device
from .learned import load_rule
from .plots import plot_curves
from .rollout import rollout
from .runs import load_checkpoint, new_run_dir, write_csv, write_json


def load_optimizer(cfg: DictConfig, device):
    """The optimizer to evaluate: learned weights from cfg.eval.checkpoint, or a baseline as configured."""
    optimizer = build(cfg.optimizer)
    if not getattr(optimizer, "learned", False):
        return optimizer
    if not cfg.eval.checkpoint:
        raise L2LError(f"optimizer={cfg.optimizer.name} is learned: pass --checkpoint PATH (a meta-train run)")
    task = load_checkpoint(cfg.eval.checkpoint)["task"]
    if task != cfg.task.name:
        raise L2LError(f"checkpoint '{cfg.eval.checkpoint}' was trained on task={task}, not task={cfg.task.name}: "
                       f"evaluate it with task={task}")
    return load_rule(cfg.eval.checkpoint, cfg.optimizer).to(device)


def load_baselines(cfg: DictConfig) -> pd.DataFrame:
    """Best learning rates from a sweep-baselines run, checked to be for this task."""
    path = Path(cfg.eval.baselines)
    csv = path / "best.csv" if path.is_dir() else path
    if not csv.is_file():
        raise L2LError(f"baselines '{path}' not found: pass a sweep-baselines run folder or its best.csv")
    saved = csv.parent / "config.yaml"
    if saved.is_file():
        swept = OmegaConf.load(saved)
        if swept.task.name != cfg.task.name:
            raise L2LError(f"baselines '{path}' were swept on task={swept.task.name}, not {cfg.task.name}")
        split = OmegaConf.select(swept, "eval.split", default="test")
        if split != cfg.eval.split:
            raise L2LError(f"baselines '{path}' were swept on {split} problems, not eval.split={cfg.eval.split}: "
                           f"sweep again with eval.split={cfg.eval.split}")
    try:
        best = pd.read_csv(csv)
        best = best[["optimizer", "lr"]]
    except (ValueError, KeyError, pd.errors.ParserError) as e:
        raise L2LError(f"baselines '{csv}' is not a best.csv written by sweep-baselines ({e})") from None
    return best


def curve_frame(name: str, lr, learned: bool, curve: torch.Tensor) -> pd.DataFrame:
    c = curve.double().cpu()
    mean = c.mean(1)
    return pd.DataFrame({"optimizer": name, "lr": lr, "learned": learned, "step": range(len(mean)),
                         "mean_loss": mean.numpy(), "median_loss": c.median(1).values.numpy(),
                         "log10_mean_loss": mean.log10().numpy()})


def race(problems, name: str, optimizer, baselines: pd.DataFrame, steps: int):
    """The optimizer and each baseline at its learning rate on the same problems: a summary row each, and curves."""
    runs = [(name, getattr(optimizer, "lr", math.nan), optimizer)]
    runs += [(b.optimizer, b.lr, build(baseline_config(b.optimizer, b.lr))) for b in baselines.itertuples()]
    curves, rows = [], []
    for label, lr, opt in runs:
        curve, seconds = rollout(problems, opt, steps)
        curves.append(curve_frame(label, lr, opt.learned, curve))
        final = curve[-1].double().mean().item()
        rows.append({"optimizer": label, "lr": lr, "learned": opt.learned, "final_loss": final,
                     "log10_final_loss": math.log10(final) if final > 0 else math.nan,
                     "diverged": not math.isfinite(final), "ms_per_step": 1e3 * seconds})
    summary = pd.DataFrame(rows)
    base = summary[~summary["learned"] & ~summary["diverged"]]
    best_base = base["final_loss"].min() if len(base) else math.nan
    summary["ratio_to_best_baseline"] = summary["final_loss"] / best_base
    adam = summary.loc[summary["optimizer"] == "adam", "ms_per_step"]
    summary["cost_vs_adam"] = summary["ms_per_step"] / adam.iloc[0] if len(adam) else math.nan
    return summary, pd.concat(curves, ignore_index=True)


def run(cfg: DictConfig) -> dict:
    """Run the optimizer (and the best baselines) on cfg.eval.problems fresh problems of cfg.eval.split."""
    check(cfg, "evaluate")
    device = resolve_device(cfg)
    task = build(cfg.task)
    optimizer = load_optimizer(cfg, device)
    baselines = load_baselines(cfg) if cfg.eval.baselines else pd.DataFrame(columns=["optimizer", "lr"])
    steps = cfg.eval.steps or cfg.task.steps
    problems = task.sample(cfg.eval.split, cfg.eval.problems, cfg.eval.seed, device=device)
    run_dir = new_run_dir(cfg, "evaluate")

    summary, curves = race(problems, cfg.optimizer.name, optimizer, baselines, steps)
    write_csv(run_dir / "curves.csv", curves)
    write_csv(run_dir / "summary.csv", summary)
    plot_curves(curves, run_dir / "curves.png", f"{cfg.task.name}: {cfg.eval.problems} {cfg.eval.split} problems")
    results = {"command": "evaluate", "run_dir": str(run_dir), "task": cfg.task.name, "data": task.describe(),
               "steps": steps, "split": cfg.eval.split, "problems": cfg.eval.problems,
               "checkpoint": cfg.eval.checkpoint,
               "rows": summary.to_dict("records")}
    write_json(run_dir / "summary.json", results)
    results["table"] = summary
    return results
