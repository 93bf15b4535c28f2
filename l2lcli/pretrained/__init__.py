"""Trained rules shipped inside the package: <name>.pt (a meta-train checkpoint, weights and config only) beside
<name>.json (its card: task, data, recipe, meta-training cost, test ratio to the best tuned baseline, code version).

`make pretrained` regenerates them all: an `l2l experiment` per task, then `l2l pretrained add` of its evaluate run.
"""

from __future__ import annotations

import io
import json
import math
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..config import horizon_of
from ..errors import L2LError
from ..runs import load_checkpoint, write_bytes, write_json

HERE = Path(__file__).parent
KEPT = ("format", "version", "code_version", "config", "task", "optimizer_name", "weights", "epoch", "val_loss")


def names(folder: Path = HERE) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.pt") if p.with_suffix(".json").is_file())


def path(name: str, folder: Path = HERE) -> Path:
    """The checkpoint of a shipped rule; an unknown name is one line listing the known ones."""
    if name not in names(folder):
        raise L2LError(f"no pretrained rule '{name}': choose one of {', '.join(names(folder)) or 'none'} "
                       "(`l2l pretrained` lists them)")
    return folder / f"{name}.pt"


def card(name: str, folder: Path = HERE) -> dict:
    path(name, folder)
    return json.loads((folder / f"{name}.json").read_text())


def cards(folder: Path = HERE) -> list[dict]:
    return [card(n, folder) for n in names(folder)]


def add(evaluate_run: str | Path, name: str, folder: Path = HERE) -> dict:
    """Ship the rule that an evaluate run (with swept baselines, on test problems) measured: its checkpoint,
    stripped to weights and config, as <folder>/<name>.pt, and its card, from the three runs' summaries."""
    if not name.isidentifier():
        raise L2LError(f"pretrained name '{name}': use letters, digits and underscores")
    ev = _summary(Path(evaluate_run), "evaluate")
    learned = [r for r in ev["rows"] if r["learned"]]
    if ev["split"] != "test" or not learned or not math.isfinite(learned[0]["ratio_to_best_baseline"]):
        raise L2LError(f"{evaluate_run}: ship a rule measured on test problems against swept baselines: "
                       "`l2l evaluate --checkpoint RUN --baselines SWEEP` (or `l2l experiment`)")
    ckpt = load_checkpoint(ev["checkpoint"])
    eval_seed = OmegaConf.load(Path(evaluate_run) / "config.yaml").eval.seed
    train = _summary(Path(ckpt["path"]).parent, "meta-train")
    rule, row = learned[0], min((r for r in ev["rows"] if not r["learned"] and not r["diverged"]),
                                key=lambda r: r["final_loss"])
    info = {
        "name": name, "task": ckpt["task"], "optimizer": ckpt["optimizer_name"], "recipe": train["recipe"],
        "data": train["data"], "code_version": ckpt["code_version"], "shipped": time.strftime("%Y-%m-%d"),
        "meta_training": {k: train[k] for k in ("seconds", "epochs", "best_epoch", "trajectories", "stop_reason",
                                                "best_val_loss", "optimizee_steps_per_second")}
        | {"threads": ckpt["config"].device.threads, "seed": ckpt["config"].seed, "horizon": horizon_of(ckpt["config"])}
        | _lineage(ckpt, train["seconds"]),
        "test": {"problems": ev["problems"], "steps": ev["steps"], "eval_seed": eval_seed,
                 "final_loss": rule["final_loss"], "best_baseline": row["optimizer"], "best_baseline_lr": row["lr"],
                 "best_baseline_final_loss": row["final_loss"], "ratio": rule["ratio_to_best_baseline"],
                 "ratio_95": [rule.get("ratio_low"), rule.get("ratio_high")]},
        "sources": {"meta_train": train["run_dir"], "evaluate": ev["run_dir"]},
    }
    buffer = io.BytesIO()
    torch.save({k: ckpt[k] for k in KEPT if k in ckpt} | {"config": OmegaConf.to_yaml(ckpt["config"])}, buffer)
    write_bytes(folder / f"{name}.pt", buffer.getvalue())
    write_json(folder / f"{name}.json", info)
    return info


def _lineage(ckpt: dict, seconds: float) -> dict:
    """What a fine-tuned rule cost with the runs it started from (train.init_from, back to a rule trained from
    scratch or to a shipped one, whose card counts its own): {init_from: [{run, seconds}], seconds_with_init}; the
    total is null where a run of the chain is gone."""
    chain, cfg = [], ckpt["config"]
    while cfg.train.get("init_from"):
        try:
            prev = load_checkpoint(cfg.train.init_from)
        except L2LError:
            chain.append({"run": cfg.train.init_from, "seconds": None})
            break
        card_file = Path(prev["path"]).with_suffix(".json")
        if card_file.is_file():  # a shipped rule
            shipped = json.loads(card_file.read_text())["meta_training"]
            chain.append({"run": str(prev["path"]), "seconds": shipped.get("seconds_with_init", shipped["seconds"])})
            break
        run = Path(prev["path"]).parent
        try:
            seconds_here = _summary(run, "meta-train")["seconds"]
        except L2LError:  # its folder holds no finished run: the cost is unknown, the chain goes on
            seconds_here = None
        chain.append({"run": str(run), "seconds": seconds_here})
        cfg = prev["config"]
    costs = [c["seconds"] for c in chain]
    return {"init_from": chain, "seconds_with_init": None if None in costs else seconds + sum(costs)}


def _summary(run: Path, command: str) -> dict:
    path = run / "summary.json"
    if not path.is_file():
        raise L2LError(f"'{run}' is not a finished {command} run (no summary.json): pass its run folder")
    s = json.loads(path.read_text())
    if s.get("command") != command:
        raise L2LError(f"'{run}' is a {s.get('command')} run, not {command}: pass the experiment's evaluate folder")
    return s

