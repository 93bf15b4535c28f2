"""The problem contract: a `TaskFamily` samples a `ProblemBatch` of B problems by split and seed.

A batch's parameters are named tensors [N, *shape] with a leading problem dimension N = R * B: R replicas of the
batch (one per learning rate in a sweep), replica r of problem b at row r * B + b (`replicate`, `by_replica`).
`loss(params, t)` returns the N losses at step t, one vectorized computation for all of them. Each parameter has a
`ParamSpec` (name, shape, kind); a learned optimizer's groups may select parameters by name prefix or by kind.
Tensors that belong to the model but are not optimized (batch-norm running statistics) live in the batch's
`buffers`, [N, *shape] like the parameters; optimizers never see them. Sampling draws on the CPU from numpy
streams keyed by (split, seed, index), so problems do not depend on the device; `sample` then moves the batch.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import L2LError

SPLITS = ("train", "validation", "test")
# Keys of a task's config that learned optimizers read (the paper's choices per task), not part of its problems.
LEARNER_KEYS = ("preprocess", "output_scale", "groups", "problem_inputs", "nominal", "nominal_lr")
# Keys only meta-training reads (the members it draws from): evaluation problems never depend on them.
TRAINING_KEYS = ("family",)


@dataclass(frozen=True)
class ParamSpec:
    """One parameter tensor of every problem of a batch: its name, shape (without the problem dimension) and kind
    (`vector`, `fc`, `conv`, `image`, ...), which optimizer groups can select with `kind:K`."""

    name: str
    shape: tuple[int, ...]
    kind: str

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def problem_rng(split: str, seed: int, index: int = 0, step: int = -1) -> np.random.Generator:
    """The random stream of one problem batch, keyed by (split, seed, index) through numpy's SeedSequence.

    torch.manual_seed keeps only 32 bits of its seed, so packing the three into one integer would make splits
    collide; a SeedSequence hashes the whole key, and splits never share a stream.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    if not (0 <= seed < 2**64 and 0 <= index < 2**64):
        raise ValueError("seed and index must be in [0, 2^64)")
    # fixed width: a variable-length key could collide with another key's zero padding
    words = [SPLITS.index(split), seed & 0xFFFFFFFF, seed >> 32, index & 0xFFFFFFFF, index >> 32, step + 1]
    return np.random.default_rng(np.random.SeedSequence(words))


def randn(rng: np.random.Generator, *shape, std: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32) * np.float32(std))


def replicate(params: dict[str, torch.Tensor], replicas: int) -> dict[str, torch.Tensor]:
    """R copies of a batch's tensors [B, ...] along the problem dimension: [R * B, ...], replica-major."""
    return {k: v.repeat(replicas, *([1] * (v.dim() - 1))) for k, v in params.items()}


def by_replica(x: torch.Tensor, batch: int) -> torch.Tensor:
    """A tensor [R * B, ...] viewed as [R, B, ...]."""
    return x.view(-1, batch, *x.shape[1:])


def replicas(params: dict[str, torch.Tensor], batch: int) -> int:
    """R, the number of replicas of a batch of B problems in parameters [R * B, ...]."""
    return next(iter(params.values())).shape[0] // batch


def per_replica(values, batch: int) -> torch.Tensor:
    """One value per replica (e.g. a learning rate) spread over its B problems: [R * B]."""
    return torch.as_tensor(values).repeat_interleave(batch)


class ProblemBatch:
    """B problems of one family: their initial parameters, their loss, and the specs of their parameters."""

    specs: tuple[ParamSpec, ...]
    batch: int
    buffers: dict[str, torch.Tensor]
    member: str = ""  # which member of a task family it was drawn from ("layers=2 hidden=40 ..."); "": the task

    def init_params(self) -> dict[str, torch.Tensor]:
        """Initial parameters theta_0, each of shape [B, *shape]."""
        raise NotImplementedError

    def loss(self, params: dict[str, torch.Tensor], t: int) -> torch.Tensor:
        """Losses [N] of parameters [N, *shape] at step t (t picks the minibatch where there is one)."""
        return self.loss_with(params, self.step_inputs(t))

    def step_inputs(self, t: int) -> tuple[torch.Tensor, ...]:
        """The data step t's loss reads (its minibatch), as tensors; with `loss_with`, a loss that torch.compile
        can trace over many steps (the data of every step an input, not Python state)."""
        raise NotImplementedError

    def loss_with(self, params: dict[str, torch.Tensor], inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Losses [N] of parameters [N, *shape] on one step's `step_inputs`."""
        raise NotImplementedError

    @property
    def traceable(self) -> bool:
        """Whether the loss is `loss_with` of `step_inputs` (an unroll of it can be compiled as one graph)."""
        return type(self).step_inputs is not ProblemBatch.step_inputs

    def pictures(self, finals: dict[str, dict], path) -> bool:
        """Write a picture of each optimizer's final parameters ({name: params}) where the task has one."""
        return False

    @property
    def kinds(self) -> dict[str, str]:
        return {s.name: s.kind for s in self.specs}

    def to(self, device) -> ProblemBatch:
        """Every tensor (and dataset) this batch holds, on `device`: the one place where problems are placed."""
        for key, value in vars(self).items():
            if isinstance(value, dict):
                value = {k: v.to(device) for k, v in value.items()}
            elif hasattr(value, "to"):
                value = value.to(device)
            setattr(self, key, value)
        return self


class TaskFamily:
    """A family of problems: `sample(split, n, seed, index, device)` gives a batch of n problems.

    `family` ({task key: [values]}, keys among `varies`) widens what meta-training sees: each of its batches
    (`sample(..., member=True)`) is drawn from a member of the family, one value of each key picked by the batch's
    own stream. Evaluation, sweeps and generalization never ask for members: they use the task's own keys.
    """

    varies: tuple[str, ...] = ()  # the keys a `family` may vary

    def __init__(self, name: str, steps: int, preprocess: str = "none", output_scale: float = 1.0,
                 groups: dict | None = None, problem_inputs: bool = False, nominal: str | None = None,
                 nominal_lr: float = 1.0, family: dict | None = None):
        # preprocess, output_scale, groups, problem_inputs and the nominal term are the paper's (or a recipe's)
        # choices for learned
        # optimizers on this task; the optimizer config reads them by interpolation, so they live here and are
        # otherwise unused by the task.
        self.name, self.steps = name, int(steps)
        self.preprocess, self.output_scale, self.groups = preprocess, output_scale, groups
        self.problem_inputs, self.nominal, self.nominal_lr = problem_inputs, nominal, nominal_lr
        self.family = {k: list(v) for k, v in family.items()} if family else None
        unknown = sorted(set(self.family or ()) - set(self.varies))
        if unknown:
            can = f"may vary {', '.join(self.varies)}" if self.varies else "must be null (this task has no family)"
            raise L2LError(f"task.family varies {', '.join(unknown)}, which task={name} cannot: task.family {can}")

    def member(self, rng: np.random.Generator) -> TaskFamily:
        """This task with each of `family`'s keys set to a value drawn from `rng` (the task itself when it has no
        family)."""
        if not self.family:
            return self
        return self._with({k: values[int(rng.integers(len(values)))] for k, values in self.family.items()})

    def spread(self, n: int, rng: np.random.Generator) -> list[TaskFamily]:
        """n members in which each value of each key appears as evenly as n allows, paired at random (a Latin
        hypercube over the keys): a validation set that covers every depth and activation, which n random members
        need not."""
        if not self.family:
            return [self] * n
        picks = {k: rng.permutation(np.resize(np.arange(len(v)), n)) for k, v in self.family.items()}
        return [self._with({k: v[int(picks[k][i])] for k, v in self.family.items()}) for i in range(n)]

    def members(self) -> list[TaskFamily]:
        """Every member of the family (the task itself when it has none)."""
        if not self.family:
            return [self]
        return [self._with(dict(zip(self.family, v, strict=True))) for v in itertools.product(*self.family.values())]

    def _with(self, values: dict) -> TaskFamily:
        chosen = copy.copy(self)  # shares the loaded data
        for key, value in values.items():
            setattr(chosen, key, value)
        return chosen

    def specs(self) -> tuple[ParamSpec, ...]:
        """The parameters of every problem of this family."""
        raise NotImplementedError

    def draw(self, split: str, n: int, rng: np.random.Generator, key: tuple) -> ProblemBatch:
        """n problems drawn from `rng` on the CPU; `key` = (split, seed, index) names the batch's own streams."""
        raise NotImplementedError

    def sample(self, split: str, n: int, seed: int, index: int = 0, device="cpu",
               member: bool | TaskFamily = False) -> ProblemBatch:
        """n problems of `split`, drawn from (seed, index); `member`: from a member of `family` drawn first (True)
        or this one (a member from `spread`)."""
        rng = problem_rng(split, seed, index)
        task = member if isinstance(member, TaskFamily) else self.member(rng) if member else self
        batch = task.draw(split, n, rng, (split, seed, index)).to(device)
        if task is not self:
            batch.member = " ".join(f"{k}={getattr(task, k)}" for k in self.family)
        return batch

    def describe(self) -> dict:
        """Facts about the data a run used, recorded in its summary."""
        return {}
