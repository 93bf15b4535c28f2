"""Generalization: a trained optimizer on task variants it never saw, against baselines tuned on each variant.

Figure 5 of the paper (MNIST: 40 hidden units, 2 hidden layers, ReLU; and 200 steps) and Figure 6 (a grid of widths
x depths), for any task whose config has the varied keys: `run(cfg) -> results`.
"""

from __future__ import annotations

import itertools

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from .config import L2LError, build, check, resolve_device
from .evaluate import load_optimizer, race
from .plots import plot_generalization
from .runs import new_run_dir, write_csv, write_json
from .sweep import best_rows, lr_grid, sweep_all


def variants(cfg: DictConfig) -> list[dict]:
    g = cfg.generalize
    if g.figure == "figure5":
        return [dict(v) for v in g.figure5]
    if g.figure == "figure6":
        return [{"layers": d, "hidden": w} for d, w in itertools.product(g.figure6.layers, g.figure6.hidden)]
    raise L2LError(f"generalize.figure={g.figure} is unknown: choose figure5 or figure6")


def compare(cfg: DictConfig, task_cfg: DictConfig, optimizer, device) -> tuple[dict, pd.DataFrame]:
    """Tune every baseline's learning rate on this task's eval.split problems, then run the learned optimizer."""
    task = build(task_cfg)
    steps = task_cfg.steps
    problems = task.sample(cfg.eval.split, cfg.eval.problems, cfg.eval.seed, device=device)
    best = best_rows(sweep_all(cfg.sweep.optimizers, lr_grid(cfg), problems, steps))
    summary, curves = race(problems, cfg.optimizer.name, optimizer, best, steps)
    learned = summary["final_loss"].iloc[0]
    baseline = summary[~summary["learned"]].set_index("optimizer")["final_loss"]
    row = {"learned_final_loss": learned,
           "best_baseline": baseline.idxmin() if len(baseline) else "none",
           "best_baseline_final_loss": baseline.min() if len(baseline) else float("nan")}
    row["ratio"] = row["learned_final_loss"] / row["best_baseline_final_loss"]
    row["verdict"] = "learned better" if row["ratio"] < 1 else "baseline better"
    return row, curves


def run(cfg: DictConfig) -> dict:
    check(cfg, "evaluate")
    device = resolve_device(cfg)
    optimizer = load_optimizer(cfg, device)
    if not optimizer.learned:
        raise L2LError("generalize needs a learned optimizer: pass --checkpoint PATH")
    run_dir = new_run_dir(cfg, "generalize")
    rows, curves = [], []
    for v in variants(cfg):
        unknown = set(v) - set(cfg.task)
        if unknown:
            raise L2LError(f"task={cfg.task.name} has no key {', '.join(sorted(unknown))} to vary")
        task_cfg = OmegaConf.merge(cfg.task, v)
        label = " ".join(f"{k}={val}" for k, val in v.items())
        row, c = compare(cfg, task_cfg, optimizer, device)
        rows.append({"variant": label, **v, **row})
        curves.append(c.assign(variant=label))
        write_csv(run_dir / "generalize.csv", pd.DataFrame(rows))  # grows as variants finish
    table = pd.DataFrame(rows)
    curves = pd.concat(curves, ignore_index=True)
    write_csv(run_dir / "curves.csv", curves)
    plot_generalization(cfg.generalize.figure, table, curves, run_dir / f"{cfg.generalize.figure}.png")
    results = {"command": "generalize", "run_dir": str(run_dir), "task": cfg.task.name,
               "figure": cfg.generalize.figure, "split": cfg.eval.split, "problems": cfg.eval.problems, "rows": rows}
    write_json(run_dir / "summary.json", results)
    results["table"] = table
    return results
