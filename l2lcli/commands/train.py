"""meta-train: truncated BPTT on fresh problem batches, early stopping on validation problems. `run(cfg)`."""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..bptt import Imitation, trajectory, validate, validation_set
from ..checkpoints import last_checkpoint
from ..config import BUDGET, baseline_config, build, horizon_of
from ..distributed import World, join
from ..errors import L2LError, WriteError
from ..loggers import Loggers
from ..runs import load_checkpoint, replace_config, rule_from, save_checkpoint, write_text
from .common import fits, prepare

console = Console(stderr=True)


@dataclass
class TrainState:
    """Everything a killed run needs to go on exactly where its last finished epoch left off (saved in last.pt)."""

    epoch: int = 0
    trajectories: int = 0
    best_val: float = math.inf
    best_epoch: int = -1
    since_best: int = 0
    bad: int = 0           # non-finite meta steps in a row
    bad_total: int = 0
    seconds: float = 0.0
    log: list = field(default_factory=list)
    step_loss: list = field(default_factory=list)  # running mean loss per step (meta_loss=relative)
    member_loss: dict = field(default_factory=dict)  # the same for each member of a task family, by member
    processes: int = 1     # torchrun's: a resumed run must keep the problem streams it was split into


def run(cfg: DictConfig) -> dict:
    """Meta-train `cfg.optimizer` on `cfg.task`; writes best.pt, last.pt, train_log.csv, summary.json. Under
    torchrun, each process takes its share of every batch and rank 0 writes (l2lcli/distributed.py)."""
    resumed = last_checkpoint(cfg.train.resume) if cfg.train.resume else None  # cfg: its config (config.resumed)
    if resumed:  # its files keep the config it started with, where train.resume is null, budget aside
        cfg = copy.deepcopy(cfg)
        cfg.train.resume = None
    setup = prepare(cfg, "meta-train")
    tc, device = cfg.train, setup.device
    horizon = horizon_of(cfg)
    world = join(device, tc.batch_size, cfg.device.threads)
    if setup.task.family and world.size > 1:  # each rank would draw its own member, and mix their running means
        raise L2LError("task.family meta-trains in one process: run it without torchrun, or set task.family=null")
    torch.manual_seed(cfg.seed)
    if tc.get("init_nets") and not tc.init_from:
        raise L2LError("train.init_nets copies nets of a checkpoint: give it one with --init-from RUN")
    from_trained = resumed is None and cfg.train.init_from  # a resumed run takes its weights from its own last.pt
    optimizer = (rule_from(load_checkpoint(tc.init_from), cfg.optimizer, tc.get("init_nets") or {})
                 if from_trained else build(cfg.optimizer))
    fits(optimizer, setup.task, max(tc.batch_size, tc.validation_problems))
    optimizer.train().to(device)
    world.same_weights(optimizer)
    meta = torch.optim.Adam(optimizer.parameters(), lr=tc.meta_lr)
    validation = validation_set(setup.task, tc, cfg.seed, device)
    if resumed:
        s, run_dir = _restore(resumed, cfg, optimizer, meta, world)
        if world.main:
            setup.log.start(run_dir, resumed=True)  # the loggers go on in the runs this folder started
    else:
        s, run_dir = TrainState(processes=world.size), world.share(setup.open_run("meta-train") if world.main else None)
    stop, started = _stop_reason(s, tc), time.perf_counter() - s.seconds
    with setup.log as log:
        try:
            with _progress(tc, s, world.main) as progress:
                while stop is None:
                    for group in meta.param_groups:
                        group["lr"] = tc.meta_lr * tc.meta_lr_decay ** s.epoch
                    losses, imitation = [], _imitation(tc, s.epoch)
                    for _ in range(tc.epoch_trajectories):
                        problems = setup.task.sample("train", tc.batch_size // world.size, cfg.seed, device=device,
                                                     index=s.trajectories * world.size + world.rank, member=True)
                        s.trajectories += 1
                        # each member of a family its own running means: its losses have their own scale
                        step_loss = s.member_loss.setdefault(problems.member, []) if problems.member else s.step_loss
                        loss, ok = trajectory(problems, optimizer, meta, horizon, tc.unroll, tc.meta_loss,
                                              tc.second_derivatives, tc.grad_clip, step_loss, world, imitation)
                        _count_bad(s, ok, tc.max_bad_steps, run_dir)
                        losses += [loss] if ok else []
                        progress(advance=int(ok), meta=loss)
                    val = validate(validation, optimizer, horizon) if world.main else math.nan
                    _end_epoch(cfg, s, optimizer, meta, world.from_main(val, device), losses, run_dir,
                               world.from_main(time.perf_counter() - started, device), log, world.main)
                    progress(epoch=s.epoch, val=s.log[-1]["val_loss"], best=s.best_val)
                    stop = _stop_reason(s, tc)
        except KeyboardInterrupt:
            console.print(f"[yellow]interrupted after epoch {s.epoch}; the last finished epoch is saved. Resume with:"
                          f"\n  l2l meta-train --resume {run_dir}", soft_wrap=True)
            stop, s.trajectories = "interrupted", s.log[-1]["trajectories"] if s.log else 0  # what was saved
        except WriteError as e:
            raise L2LError(f"{e}; resume with `l2l meta-train --resume {run_dir}`") from None
        results = _finish(cfg, setup.task, s, stop, run_dir, log, world)
        log.finish("KILLED" if stop == "interrupted" else "FINISHED")
    world.leave()
    return {**results, "loggers": log.report()}


def _imitation(tc, epoch: int) -> Imitation | None:
    """This epoch's imitation of a hand-designed optimizer (`train.imitate`), its weight falling linearly from
    `weight` at the first epoch to 0 after `epochs`; None when off (runs saved before the key have none)."""
    im = tc.get("imitate")
    if im is None or im.optimizer is None or epoch >= im.epochs:
        return None
    return Imitation(build(baseline_config(im.optimizer, im.lr)), im.weight * (1 - epoch / im.epochs))


def _count_bad(s: TrainState, ok: bool, limit: int, run_dir: Path) -> None:
    """Non-finite meta steps are skipped and counted; `limit` of them in a row end the run."""
    if ok:
        s.bad = 0
        return
    s.bad, s.bad_total = s.bad + 1, s.bad_total + 1
    console.print(f"[yellow]non-finite meta step skipped ({s.bad} in a row)")
    if s.bad >= limit:
        raise L2LError(f"meta-training diverged: {limit} non-finite meta steps in a row; the best checkpoint so far "
                       f"is in {run_dir}. Lower train.meta_lr or set train.grad_clip")


def _end_epoch(cfg, s: TrainState, optimizer, meta, val: float, losses: list, run_dir: Path, seconds: float,
               log: Loggers, writes: bool = True) -> None:
    """Early stopping's bookkeeping after an epoch: keep the best by validation loss, log, save the state (where
    this process `writes`: every rank keeps the books, rank 0 the files)."""
    before = s.log[-1] if s.log else {"trajectories": 0, "seconds": 0.0}
    s.epoch += 1
    if val < s.best_val * (1 - cfg.train.min_improvement):
        s.best_val, s.best_epoch, s.since_best = val, s.epoch, 0
        if writes:
            save_checkpoint(run_dir / "best.pt", cfg, optimizer, epoch=s.epoch, val_loss=val)
    else:
        s.since_best += 1
    s.seconds = seconds
    s.log.append({"epoch": s.epoch, "trajectories": s.trajectories,
                  "meta_loss": sum(losses) / len(losses) if losses else math.nan, "val_loss": val,
                  "best_val_loss": s.best_val, "meta_lr": meta.param_groups[0]["lr"], "bad_steps": s.bad_total,
                  "seconds": s.seconds, "epoch_seconds": s.seconds - before["seconds"],
                  "optimizee_steps_per_second": (s.trajectories - before["trajectories"]) * cfg.train.batch_size
                  * horizon_of(cfg) / max(s.seconds - before["seconds"], 1e-9)})
    if not writes:
        return
    log.write_csv(run_dir / "train_log.csv", pd.DataFrame(s.log))
    save_checkpoint(run_dir / "last.pt", cfg, optimizer, meta_optimizer=meta.state_dict(), train_state=asdict(s),
                    rng=torch.get_rng_state())
    if not console.is_terminal:  # logs and CI get one line per epoch instead of the live bar
        console.print(f"epoch {s.epoch}: meta-loss {s.log[-1]['meta_loss']:.4g}, val {val:.4g}, best "
                      f"{s.best_val:.4g}, {s.seconds:.0f} s", highlight=False)


def _stop_reason(s: TrainState, tc) -> str | None:
    if s.since_best >= tc.patience:
        return "early_stopping"
    if tc.time_limit and s.seconds >= tc.time_limit:
        return "time_limit"
    return "max_epochs" if s.epoch >= tc.max_epochs else None


def _finish(cfg, task, s: TrainState, stop: str, run_dir: Path, log: Loggers, world: World) -> dict:
    """The run's summary.json (and the results returned to the caller)."""
    if s.best_epoch < 0 and stop == "interrupted":
        raise KeyboardInterrupt  # stopped before its first epoch: nothing to summarise
    if s.best_epoch < 0:
        raise L2LError(f"no epoch finished with a finite validation loss; see {run_dir}/train_log.csv")
    horizon = horizon_of(cfg)
    results = {
        "command": "meta-train", "run_dir": str(run_dir), "checkpoint": str(run_dir / "best.pt"),
        "task": cfg.task.name, "optimizer": cfg.optimizer.name, "data": task.describe(),
        "recipe": OmegaConf.select(cfg, "recipe.name", default="none"),  # none: a run saved before recipes
        "best_val_loss": s.best_val, "best_epoch": s.best_epoch, "epochs": s.epoch, "trajectories": s.trajectories,
        "stop_reason": stop, "bad_steps": s.bad_total, "seconds": s.seconds, "horizon": horizon,
        "optimizee_steps_per_second": s.trajectories * cfg.train.batch_size * horizon / max(s.seconds, 1e-9),
        "seconds_to_best": s.log[s.best_epoch - 1]["seconds"], "processes": world.size,
    }
    if world.main:
        log.write_json(run_dir / "summary.json", results)
    return {**results, "rank": world.rank}


@contextmanager
def _progress(tc, s: TrainState, shown: bool = True):
    """A live progress bar on a terminal (none in logs, nor on torchrun's other ranks); yields `update(**fields)`."""
    columns = [TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("meta-loss {task.fields[meta]:.3g}  val {task.fields[val]:.3g}"),
               TextColumn("best {task.fields[best]:.3g}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not (shown and console.is_terminal)) as progress:
        bar = progress.add_task("meta-train", total=tc.max_epochs * tc.epoch_trajectories,
                                completed=s.epoch * tc.epoch_trajectories, epoch=s.epoch, meta=math.nan,
                                val=math.nan, best=s.best_val)
        yield lambda **fields: progress.update(bar, **fields)


def _new_budget(ckpt: dict, cfg: DictConfig, s: TrainState, run_dir: Path, writes: bool) -> None:
    """A resumed run's new budget: refused where the run would stop at once all the same; else written into its
    last.pt and config.yaml first, so that a plain --resume after a kill keeps it."""
    stop = _stop_reason(s, cfg.train)
    if stop:
        done, key = {"early_stopping": (f"{s.since_best} epochs without improvement", "train.patience"),
                     "time_limit": (f"{s.seconds:.0f} s of meta-training", "train.time_limit"),
                     "max_epochs": (f"{s.epoch} epochs done", "train.max_epochs")}[stop]
        raise L2LError(f"{run_dir} would stop at once ({done}, {key}={OmegaConf.select(cfg, key)}): raise {key}")
    if writes:
        replace_config(ckpt, cfg)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))


def _restore(ckpt: dict, cfg: DictConfig, optimizer, meta, world: World) -> tuple[TrainState, Path]:
    run_dir = Path(ckpt["path"]).parent
    if ckpt["train_state"].get("processes", 1) != world.size:
        raise L2LError(f"{run_dir} was meta-trained on {ckpt['train_state'].get('processes', 1)} process(es): resume "
                       f"it on as many (torchrun --nproc_per_node=N), not {world.size}")
    optimizer.load_state_dict(ckpt["weights"])
    try:
        meta.load_state_dict(ckpt["meta_optimizer"])
    except ValueError:  # its meta-optimizer knew fewer weights: saved before a layer was added (a nominal's gate)
        raise L2LError(f"{run_dir} was saved by an older l2l whose rule had fewer weights (e.g. a nominal term "
                       f"without its gate), so its meta-training cannot resume: start a new run from its weights "
                       f"with `l2l meta-train --init-from {run_dir}`") from None
    torch.set_rng_state(ckpt["rng"])
    s = TrainState(**ckpt["train_state"])
    if any(OmegaConf.select(cfg, k) != OmegaConf.select(ckpt["config"], k) for k in BUDGET):
        _new_budget(ckpt, cfg, s, run_dir, world.main)
    if world.main:
        console.print(f"resuming {run_dir} after epoch {s.epoch}")
    return s, run_dir
