"""generalize: a trained optimizer on task variants it never saw, against baselines tuned on each variant.

Figure 5 of the paper (MNIST: 40 hidden units, 2 hidden layers, ReLU; and 200 steps), Figure 6 (a grid of widths x
depths) and Figure 7 (CIFAR-10, CIFAR-5, CIFAR-2, with LSTM-sub, an optimizer trained on the held-out labels only:
`generalize.sub`), for any task whose config has the varied keys: `run(cfg) -> results`.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ..config import build
from ..errors import L2LError
from ..plots import plot_generalization
from ..runs import load_checkpoint, rule_from
from ..schema import check_values
from .common import fits, load_optimizer, prepare
from .evaluate import find_baselines, race, read_best
from .sweep import best_rows, lr_grid, sweep_all


def variants(cfg: DictConfig) -> list[dict]:
    """The task variants of generalize.figure, each checked like a command-line override before any work."""
    g = cfg.generalize
    if g.figure == "figure6":
        found = [{"layers": d, "hidden": w} for d, w in itertools.product(g.figure6.layers, g.figure6.hidden)]
    else:
        found = [dict(v) for v in g[g.figure]]
    for v in found:
        unknown = set(v) - set(cfg.task)
        if unknown:
            raise L2LError(f"task={cfg.task.name} has no key {', '.join(sorted(unknown))} to vary")
        check_values(OmegaConf.merge(cfg, {"task": v}))
    for v in found:  # then its data (a style image too small for a larger size): refused before any variant runs
        build(OmegaConf.merge(cfg.task, v)).describe()
    return found


def compare(cfg: DictConfig, task_cfg: DictConfig, optimizers: dict, device, swept: Path | None = None
            ) -> tuple[dict, pd.DataFrame]:
    """Tune every baseline's learning rate on this task's eval.split problems (or take the best learning rates of
    the sweep-baselines run `swept`, made on these very problems), then run the learned optimizers ({name:
    optimizer}; the first is the one the row's ratio is about, a second is LSTM-sub)."""
    task = build(task_cfg)
    for optimizer in optimizers.values():
        fits(optimizer, task, cfg.eval.problems)
    steps = task_cfg.steps
    problems = task.sample(cfg.eval.split, cfg.eval.problems, cfg.eval.seed, device=device)
    if swept is not None:
        best = read_best(swept / "best.csv")
    else:
        best = best_rows(sweep_all(cfg.sweep.optimizers, lr_grid(cfg), problems, steps))
    summary, curves, _ = race(problems, optimizers, best, steps)
    baseline = summary[~summary["learned"]].set_index("optimizer")["final_loss"]
    best_loss = baseline.min() if len(baseline) else float("nan")
    row = {"learned_final_loss": summary["final_loss"].iloc[0],
           "best_baseline": baseline.idxmin() if len(baseline) else "none", "best_baseline_final_loss": best_loss,
           "baselines": str(swept) if swept is not None else "swept here"}
    row["ratio"] = row["learned_final_loss"] / best_loss
    if "ratio_low" in summary:  # 95% bootstrap interval over the problems
        row["ratio_low"], row["ratio_high"] = summary["ratio_low"].iloc[0], summary["ratio_high"].iloc[0]
    row["verdict"] = "learned better" if row["ratio"] < 1 else "baseline better"
    if len(optimizers) > 1:
        row["sub_final_loss"] = summary["final_loss"].iloc[1]
        row["sub_ratio"] = row["sub_final_loss"] / best_loss
        if "ratio_low" in summary:
            row["sub_ratio_low"], row["sub_ratio_high"] = summary["ratio_low"].iloc[1], summary["ratio_high"].iloc[1]
    return row, curves


def sweeps_for(cfg: DictConfig, todo: list[dict]) -> list[Path | None]:
    """Each variant's sweep-baselines run under eval.baselines (None: sweep here); at least one must be found."""
    if not cfg.eval.baselines:
        return [None] * len(todo)
    folder = Path(cfg.eval.baselines)
    if not folder.is_dir():
        raise L2LError(f"baselines '{folder}' is not a folder: pass a sweep-baselines run folder or a folder of them")
    # the variant's horizon is its task.steps (generalize races task.steps; eval.steps plays no part)
    found = [find_baselines(folder, OmegaConf.merge(cfg, {"task": v, "eval": {"steps": None}})) for v in todo]
    if not any(found):
        raise L2LError(f"no sweep-baselines run under '{folder}' was made on the problems of any variant of "
                       f"{cfg.generalize.figure} with this sweep's baselines and grid: sweep each with `l2l "
                       "sweep-baselines` and the variant's task keys (the same eval.seed, eval.problems, eval.split, "
                       "sweep.*), or leave --baselines out to sweep here")
    return found


def run(cfg: DictConfig) -> dict:
    setup = prepare(cfg, "generalize")
    optimizer = load_optimizer(setup)
    if not optimizer.learned:
        raise L2LError("generalize needs a learned optimizer: pass --checkpoint PATH")
    optimizers = {cfg.optimizer.name: optimizer}
    if cfg.generalize.sub:  # LSTM-sub: trained on other labels of the same task, with its own optimizer config
        sub = load_checkpoint(cfg.generalize.sub)
        if sub["task"] != cfg.task.name:
            raise L2LError(f"generalize.sub '{cfg.generalize.sub}' was trained on task={sub['task']}, not "
                           f"task={cfg.task.name}")
        optimizers[f"{sub['optimizer_name']}-sub"] = rule_from(sub).to(setup.device)
    todo = variants(cfg)
    sweeps = sweeps_for(cfg, todo)
    run_dir = setup.open_run("generalize")
    with setup.log as log:
        rows, curves = [], []
        for v, swept in zip(todo, sweeps, strict=True):
            label = " ".join(f"{k}={'null' if val is None else val}" for k, val in v.items())  # as an override
            row, c = compare(cfg, OmegaConf.merge(cfg.task, v), optimizers, setup.device, swept)
            rows.append({"variant": label, **v, **row})
            curves.append(c.assign(variant=label))
            log.write_csv(run_dir / "generalize.csv", pd.DataFrame(rows))  # grows as variants finish
        table = pd.DataFrame(rows)
        curves = pd.concat(curves, ignore_index=True)
        log.write_csv(run_dir / "curves.csv", curves)
        plot_generalization(cfg.generalize.figure, table, curves, run_dir / f"{cfg.generalize.figure}.png")
        results = {"command": "generalize", "run_dir": str(run_dir), "task": cfg.task.name,
                   "figure": cfg.generalize.figure, "split": cfg.eval.split, "problems": cfg.eval.problems,
                   "rows": rows}
        log.write_json(run_dir / "summary.json", results)
    return {**results, "table": table, "loggers": log.report()}
