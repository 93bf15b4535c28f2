"""Meta-training by truncated BPTT with early stopping on validation problems: `run(cfg) -> results`."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .config import L2LError, build, check, resolve_device
from .learned import load_rule, tree_detach
from .rollout import loss_and_grads, rollout
from .runs import load_checkpoint, new_run_dir, save_checkpoint, write_csv, write_json

console = Console(stderr=True)


def meta_loss_term(loss: torch.Tensor, t: int, T: int, kind: str, scale: float = 1.0) -> torch.Tensor:
    """This step's share of the meta-loss L(phi) = sum_t w_t f(theta_t), averaged over the problems.

    `relative` weights step t by 1 / (running mean loss at step t), `scale`: every step's relative progress counts
    alike, as in log_sum, but the loss stays linear, so one near-zero minibatch loss cannot dominate the way its
    log does (and the meta-objective stays the mean loss that evaluation reports).
    """
    if kind == "sum":
        return loss.mean()
    if kind == "relative":
        return loss.mean() / scale
    if kind == "final":
        return loss.mean() if t == T else loss.new_zeros(())
    return loss.clamp_min(1e-30).log().mean()  # log_sum


def validate(problems, optimizer, steps: int) -> float:
    """Mean final loss of the frozen optimizer on the validation problems (inf if any diverged)."""
    optimizer.eval()
    curve, _ = rollout(problems, optimizer, steps)
    optimizer.train()
    final = curve[-1].mean().item()
    return final if math.isfinite(final) else math.inf


def trajectory(problems, optimizer, meta, T: int, tc, step_loss: list | None = None) -> tuple[float, bool]:
    """One trajectory on a fresh problem batch: T steps cut into unrolls of tc.unroll, a meta step after each.

    Returns the trajectory's mean loss, and False if a meta step was not finite (nothing was changed then, and the
    rest of the trajectory, whose optimizee has blown up, is dropped). `step_loss` holds the running mean loss at
    each step for `meta_loss=relative`; it is updated in place (an exponential average over trajectories).
    """
    step_loss = step_loss if step_loss is not None else []
    params = problems.init_params()
    state = optimizer.init_state(params)
    params, loss, grads = loss_and_grads(problems, params, 0)
    meta_loss, mean_loss = 0.0, 0.0
    for t in range(1, T + 1):
        params, state = optimizer.step(params, grads, state)
        params, loss, grads = loss_and_grads(problems, params, t, retain_graph=True,
                                             create_graph=tc.second_derivatives)
        mean = loss.detach().mean().item()
        if len(step_loss) < t:  # the first trajectory starts each step's running mean at its own loss
            step_loss.append(mean if math.isfinite(mean) else 1.0)
        meta_loss = meta_loss + meta_loss_term(loss, t, T, tc.meta_loss, scale=max(step_loss[t - 1], 1e-12))
        if math.isfinite(mean):
            step_loss[t - 1] = 0.9 * step_loss[t - 1] + 0.1 * mean
        mean_loss += mean / T
        if t % tc.unroll == 0 or t == T:
            if not _meta_step(optimizer, meta, meta_loss, tc.grad_clip):
                return mean_loss, False
            meta_loss = 0.0
            params, state, grads = tree_detach(params), tree_detach(state), tree_detach(grads)
    return mean_loss, True


def run(cfg: DictConfig) -> dict:
    """Meta-train `cfg.optimizer` on `cfg.task`; writes best.pt, last.pt, train_log.csv, summary.json."""
    if cfg.train.resume:
        cfg, resumed = _resume_config(cfg)
    else:
        resumed = None
    check(cfg, "meta-train")
    device = resolve_device(cfg)
    torch.manual_seed(cfg.seed)
    task = build(cfg.task)
    if cfg.train.init_from and resumed is None:  # a resumed run takes its weights from its own last.pt
        optimizer = load_rule(cfg.train.init_from, cfg.optimizer).train()
    else:
        optimizer = build(cfg.optimizer)
    if not getattr(optimizer, "learned", False):
        raise L2LError(f"optimizer={cfg.optimizer.name} has nothing to meta-train: use optimizer=lstm, lstm_gac, "
                       "ntm_bfgs or ntm_lbfgs (baselines are tuned with `l2l sweep-baselines`)")
    optimizer.to(device)
    meta = torch.optim.Adam(optimizer.parameters(), lr=cfg.train.meta_lr)
    tc, T, B = cfg.train, cfg.task.steps, cfg.train.batch_size
    validation = task.sample("validation", tc.validation_problems, cfg.seed, device=device)

    s = {"epoch": 0, "trajectories": 0, "best_val": math.inf, "best_epoch": -1, "since_best": 0, "bad": 0,
         "bad_total": 0, "seconds": 0.0, "log": [], "step_loss": []}
    if resumed is not None:
        run_dir = Path(resumed["path"]).parent
        optimizer.load_state_dict(resumed["weights"])
        meta.load_state_dict(resumed["meta_optimizer"])
        s.update(resumed["train_state"])
        torch.set_rng_state(resumed["rng"])
        console.print(f"resuming {run_dir} after epoch {s['epoch']}")
    else:
        run_dir = new_run_dir(cfg, "meta-train")

    def save_last():
        save_checkpoint(run_dir / "last.pt", cfg, optimizer, meta_optimizer=meta.state_dict(),
                        train_state=dict(s), rng=torch.get_rng_state())

    stop_reason = "max_epochs"
    columns = [TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("meta-loss {task.fields[meta]:.3g}  val {task.fields[val]:.3g}"),
               TextColumn("best {task.fields[best]:.3g}"), TimeElapsedColumn(), TimeRemainingColumn()]
    total = tc.max_epochs * tc.epoch_trajectories
    started = time.perf_counter() - s["seconds"]
    try:
        with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
            bar = progress.add_task("meta-train", total=total, completed=s["epoch"] * tc.epoch_trajectories,
                                    epoch=s["epoch"], meta=math.nan, val=math.nan, best=s["best_val"])
            while s["epoch"] < tc.max_epochs:
                for group in meta.param_groups:
                    group["lr"] = tc.meta_lr * tc.meta_lr_decay ** s["epoch"]
                epoch_losses = []
                for _ in range(tc.epoch_trajectories):
                    problems = task.sample("train", B, cfg.seed, index=s["trajectories"], device=device)
                    s["trajectories"] += 1
                    loss, ok = trajectory(problems, optimizer, meta, T, tc, s["step_loss"])
                    if not ok:
                        s["bad"] += 1
                        s["bad_total"] += 1
                        console.print(f"[yellow]non-finite meta step skipped ({s['bad']} in a row)")
                        if s["bad"] >= tc.max_bad_steps:
                            raise _Diverged()
                        continue
                    s["bad"] = 0
                    epoch_losses.append(loss)
                    progress.update(bar, advance=1, meta=loss)

                # Early stopping: freeze, validate, keep the best.
                s["epoch"] += 1
                val = validate(validation, optimizer, T)
                if val < s["best_val"] * (1 - tc.min_improvement):
                    s.update(best_val=val, best_epoch=s["epoch"], since_best=0)
                    save_checkpoint(run_dir / "best.pt", cfg, optimizer, epoch=s["epoch"], val_loss=val)
                else:
                    s["since_best"] += 1
                s["seconds"] = time.perf_counter() - started
                s["log"].append({"epoch": s["epoch"], "trajectories": s["trajectories"],
                                 "meta_loss": sum(epoch_losses) / len(epoch_losses) if epoch_losses else math.nan,
                                 "val_loss": val,
                                 "best_val_loss": s["best_val"], "meta_lr": meta.param_groups[0]["lr"],
                                 "bad_steps": s["bad_total"], "seconds": s["seconds"]})
                write_csv(run_dir / "train_log.csv", pd.DataFrame(s["log"]))
                save_last()
                progress.update(bar, epoch=s["epoch"], val=val, best=s["best_val"])
                if not console.is_terminal:  # logs and CI get one line per epoch instead of the live bar
                    row = s["log"][-1]
                    console.print(f"epoch {row['epoch']}: meta-loss {row['meta_loss']:.4g}, val {val:.4g}, best "
                                  f"{s['best_val']:.4g}, {row['seconds']:.0f} s", highlight=False)
                if s["since_best"] >= tc.patience:
                    stop_reason = "early_stopping"
                    break
                if tc.time_limit and s["seconds"] >= tc.time_limit:
                    stop_reason = "time_limit"
                    break
    except KeyboardInterrupt:
        console.print(f"[yellow]interrupted after epoch {s['epoch']}; the last finished epoch is saved. Resume with:"
                      f"\n  l2l meta-train train.resume={run_dir}")
        stop_reason = "interrupted"
        s["trajectories"] = s["log"][-1]["trajectories"] if s["log"] else 0  # report what was saved
    except _Diverged:
        raise L2LError(f"meta-training diverged: {tc.max_bad_steps} non-finite meta steps in a row; the best "
                       f"checkpoint so far is in {run_dir}. Lower train.meta_lr or set train.grad_clip") from None

    if s["best_epoch"] < 0:
        raise L2LError(f"no epoch finished with a finite validation loss; see {run_dir}/train_log.csv")
    steps_done = s["trajectories"] * B * T
    results = {
        "command": "meta-train", "run_dir": str(run_dir), "checkpoint": str(run_dir / "best.pt"),
        "task": cfg.task.name, "optimizer": cfg.optimizer.name, "data": task.describe(),
        "best_val_loss": s["best_val"], "best_epoch": s["best_epoch"], "epochs": s["epoch"],
        "trajectories": s["trajectories"], "stop_reason": stop_reason, "bad_steps": s["bad_total"],
        "seconds": s["seconds"], "optimizee_steps_per_second": steps_done / max(s["seconds"], 1e-9),
        "seconds_to_best": s["log"][s["best_epoch"] - 1]["seconds"],
    }
    write_json(run_dir / "summary.json", results)
    return results


class _Diverged(Exception):
    pass


def _meta_step(optimizer, meta, meta_loss, clip) -> bool:
    """One ADAM step on phi; refused (and nothing changed) if the loss, gradient or new weights are not finite."""
    meta.zero_grad(set_to_none=True)
    if not torch.is_tensor(meta_loss) or not meta_loss.requires_grad:
        return True  # an unroll with zero weight in the meta-loss (meta_loss=final before step T): nothing to learn
    if not torch.isfinite(meta_loss):
        return False
    meta_loss.backward()
    params = [p for p in optimizer.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else math.inf)
    if not torch.isfinite(norm):
        meta.zero_grad(set_to_none=True)
        return False
    backup = {k: v.clone() for k, v in optimizer.state_dict().items()}
    meta_state = {k: {n: (x.clone() if torch.is_tensor(x) else x) for n, x in v.items()}
                  for k, v in meta.state.items()}
    meta.step()
    if all(torch.isfinite(p).all() for p in optimizer.parameters()):
        return True
    optimizer.load_state_dict(backup)  # roll back: a NaN weight must never reach a checkpoint
    for k, v in meta_state.items():
        meta.state[k] = v
    return False


def _resume_config(cfg: DictConfig):
    """The saved config of the run to resume (it wins over the command line) and its last checkpoint."""
    path = Path(cfg.train.resume)
    ckpt = load_checkpoint(path / "last.pt" if path.is_dir() else path)
    if "train_state" not in ckpt:
        raise L2LError(f"'{ckpt['path']}' holds no training state (best.pt cannot resume): pass the run folder "
                       "or its last.pt")
    saved = ckpt["config"]
    OmegaConf.set_struct(saved, True)
    return saved, ckpt
