"""What every command does before its own work: compose (with a checkpoint's config), check, place, build."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..config import build, check, compose, is_learned, quoted, with_inherited
from ..device import resolve_device
from ..distributed import only_meta_train, rank
from ..errors import L2LError
from ..loggers import Loggers, open_loggers
from ..runs import load_checkpoint, new_run_dir, rule_from
from ..tasks.base import ProblemBatch, TaskFamily


def command_overrides(overrides: list[str], checkpoint: str | None = None, init_from: str | None = None,
                      **keys) -> list[str]:
    """The overrides of one command: a checkpoint to evaluate (eval.checkpoint) brings its task, optimizer and
    recipe; one to fine-tune from (train.init_from) brings its optimizer; `keys` are set last (e.g. eval.baselines).
    Sweeps (seed=0,1) stay as they are, for a multirun to expand."""
    keys = {**keys, "eval.checkpoint": checkpoint, "train.init_from": init_from}
    overrides = list(overrides) + [f"{k}={quoted(v)}" for k, v in keys.items() if v is not None]
    source, groups = (checkpoint, ("task", "optimizer")) if checkpoint else (init_from, ("optimizer",))
    if not source:
        return overrides
    return with_inherited(overrides, load_checkpoint(source)["config"], groups, f"checkpoint '{source}'")


def compose_for(overrides: list[str], checkpoint: str | None = None, init_from: str | None = None,
                **keys) -> DictConfig:
    """The config of one command (see command_overrides)."""
    return compose(command_overrides(overrides, checkpoint, init_from, **keys))


@dataclass
class Setup:
    cfg: DictConfig
    device: torch.device
    task: TaskFamily
    log: Loggers  # the folder's CSVs and JSON are written through it, and sent on to TensorBoard / MLflow

    @property
    def steps(self) -> int:
        """The evaluation horizon: eval.steps, else the task's."""
        return self.cfg.eval.steps or self.cfg.task.steps

    def problems(self) -> ProblemBatch:
        """The evaluation problems: eval.problems of eval.split, drawn with eval.seed."""
        c = self.cfg.eval
        return self.task.sample(c.split, c.problems, c.seed, device=self.device)

    def open_run(self, command: str, label: str | None = None) -> Path:
        """A fresh run folder, with a run opened for it in each logger."""
        run_dir = new_run_dir(self.cfg, command, label)
        self.log.start(run_dir)
        return run_dir


def prepare(cfg: DictConfig, command: str) -> Setup:
    """Check the config, set up the device, build the task and read its data, reach the loggers: everything that
    can refuse a run happens here, before a run folder exists."""
    check(cfg, command)
    if command != "meta-train":
        only_meta_train(command)
    device = resolve_device(cfg)
    task = build(cfg.task)
    data = task.describe()  # reads the data: a missing dataset is an error now, not after a run folder was made
    # under torchrun one process, rank 0, writes the folder and logs
    log = open_loggers(cfg, command, data) if rank() == 0 else Loggers(cfg, command, data, [])
    return Setup(cfg, device, task, log)


def fits(optimizer, task: TaskFamily, problems: int) -> None:
    """Refuse, before any work, an optimizer whose groups leave some parameter of the task (of any member of its
    family) without a network, or whose state for `problems` problems at once would be too large."""
    if not getattr(optimizer, "learned", False):
        return
    for member in task.members():  # a family's largest member must fit too
        specs = {s.name: s for s in member.specs()}
        for group, names in optimizer.assign(list(specs), {k: s.kind for k, s in specs.items()}).items():
            net = optimizer.nets[group]
            if hasattr(net, "check_size"):
                net.check_size(problems, sum(specs[k].numel for k in names))


def load_optimizer(setup: Setup):
    """The optimizer to evaluate: learned weights from eval.checkpoint, or a baseline as configured."""
    cfg = setup.cfg
    if not is_learned(cfg.optimizer):
        return build(cfg.optimizer)
    if not cfg.eval.checkpoint:
        raise L2LError(f"optimizer={cfg.optimizer.name} is learned: pass --checkpoint PATH (a meta-train run)")
    ckpt = load_checkpoint(cfg.eval.checkpoint)
    if ckpt["task"] != cfg.task.name:
        raise L2LError(f"checkpoint '{cfg.eval.checkpoint}' was trained on task={ckpt['task']}, not "
                       f"task={cfg.task.name}: evaluate it with task={ckpt['task']}")
    rule = rule_from(ckpt, cfg.optimizer).to(setup.device)
    fits(rule, setup.task, cfg.eval.problems)
    return rule
