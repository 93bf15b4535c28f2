"""sweep-baselines: every baseline over a log grid of learning rates, all at once, on the evaluation problems."""

from __future__ import annotations

import math

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from ..config import baseline_config, build
from ..plots import plot_sweep
from ..rollout import rollout
from ..runs import write_text
from ..tasks.base import by_replica, per_replica
from .common import prepare


def lr_grid(cfg: DictConfig) -> list[float]:
    s = cfg.sweep
    if s.lr_num == 1:
        return [float(s.lr_min)]
    ratio = math.log10(s.lr_max / s.lr_min) / (s.lr_num - 1)
    return [float(s.lr_min * 10 ** (i * ratio)) for i in range(s.lr_num)]


def sweep_baseline(name: str, lrs: list[float], problems, steps: int) -> pd.DataFrame:
    """Every learning rate of one baseline at once: replicas of the problem batch along the problem dimension."""
    optimizer = build(baseline_config(name), lr=per_replica(lrs, problems.batch))
    curve, seconds_per_step, *_ = rollout(problems, optimizer, steps, replicas=len(lrs))
    final = by_replica(curve[-1], problems.batch).double().cpu()
    bad = ~torch.isfinite(final)
    mean = final.mean(1)
    return pd.DataFrame({
        "optimizer": name, "lr": lrs, "final_loss": mean.numpy(),
        "log10_final_loss": mean.log10().numpy(),
        "diverged": (bad.any(1) | ~torch.isfinite(mean)).numpy(),
        "diverged_fraction": bad.double().mean(1).numpy(),
        "ms_per_step_all_lrs": 1e3 * seconds_per_step,
    })


def sweep_all(names, lrs: list[float], problems, steps: int) -> pd.DataFrame:
    """Every baseline in `names` over the learning-rate grid, one row per (optimizer, lr)."""
    return pd.concat([sweep_baseline(n, lrs, problems, steps) for n in names], ignore_index=True)


def best_rows(sweep: pd.DataFrame) -> pd.DataFrame:
    """Each baseline's best learning rate by mean final loss; diverged learning rates are never chosen."""
    ok = sweep[~sweep["diverged"]].reset_index(drop=True)  # idxmin labels must be unique
    return ok.loc[ok.groupby("optimizer", sort=False)["final_loss"].idxmin()].reset_index(drop=True)


def run(cfg: DictConfig) -> dict:
    """Sweep every baseline in cfg.sweep.optimizers over the learning-rate grid on cfg.eval.split's problems."""
    setup = prepare(cfg, "sweep-baselines")
    problems = setup.problems()
    run_dir = setup.open_run("sweep-baselines", label="baselines")
    with setup.log as log:
        write_text(run_dir / "baselines.yaml",
                   OmegaConf.to_yaml({n: baseline_config(n) for n in cfg.sweep.optimizers}))
        sweep = sweep_all(cfg.sweep.optimizers, lr_grid(cfg), problems, setup.steps)
        best = best_rows(sweep)
        log.write_csv(run_dir / "sweep.csv", sweep)
        log.write_csv(run_dir / "best.csv", best)
        plot_sweep(sweep, run_dir / "sweep.png", f"{cfg.task.name}: final loss after {setup.steps} steps")
        results = {"command": "sweep-baselines", "run_dir": str(run_dir), "task": cfg.task.name,
                   "data": setup.task.describe(), "steps": setup.steps, "split": cfg.eval.split,
                   "problems": cfg.eval.problems, "best": best[["optimizer", "lr", "final_loss"]].to_dict("records"),
                   "never_converged": sorted(set(cfg.sweep.optimizers) - set(best["optimizer"]))}
        log.write_json(run_dir / "summary.json", results)
    return {**results, "table": best, "loggers": log.report()}
