"""Task families: each samples batches of problems by split and seed.

A `Problems` batch holds B problems. Its parameters are named tensors with a leading problem dimension of size
N = R * B (R replicas of the batch, e.g. one per learning rate in a sweep; replica r of problem b sits at r * B + b),
and `loss(params, t)` returns the N losses at step t, one vectorized computation for all of them.
"""

from __future__ import annotations

import numpy as np
import torch

SPLITS = ("train", "validation", "test")


def problem_rng(split: str, seed: int, index: int = 0) -> np.random.Generator:
    """The random stream of one problem batch, keyed by (split, seed, index) through numpy's SeedSequence.

    torch.manual_seed keeps only 32 bits of its seed, so packing the three into one integer would make splits
    collide; a SeedSequence hashes the whole key, and splits never share a stream.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    if not (0 <= seed < 2**64 and 0 <= index < 2**64):
        raise ValueError("seed and index must be in [0, 2^64)")
    words = [SPLITS.index(split), seed & 0xFFFFFFFF, seed >> 32, index & 0xFFFFFFFF, index >> 32]  # fixed width
    return np.random.default_rng(np.random.SeedSequence(words))


def randn(rng: np.random.Generator, *shape, std: float = 1.0) -> torch.Tensor:
    return torch.from_numpy(rng.standard_normal(shape, dtype=np.float32) * np.float32(std))


class Problems:
    """A batch of B problems of one task family."""

    batch: int

    def init_params(self) -> dict[str, torch.Tensor]:
        """Initial parameters theta_0, each of shape [B, *shape]."""
        raise NotImplementedError

    def loss(self, params: dict[str, torch.Tensor], t: int) -> torch.Tensor:
        """Losses [N] of parameters [N, *shape] at step t (t picks the minibatch where there is one)."""
        raise NotImplementedError


class Task:
    """A family of problems: `sample(split, n, seed, index)` gives a batch of n problems."""

    name: str
    steps: int

    def __init__(self, name: str, steps: int, preprocess: str = "none", output_scale: float = 1.0):
        # preprocess and output_scale are the paper's choices for learned optimizers on this task; the optimizer
        # config reads them by interpolation, so they live here and are otherwise unused by the task.
        self.name, self.steps = name, int(steps)
        self.preprocess, self.output_scale = preprocess, output_scale

    def sample(self, split: str, n: int, seed: int, index: int = 0, device="cpu") -> Problems:
        raise NotImplementedError

    def describe(self) -> dict:
        """Facts about the data a run used, recorded in its summary."""
        return {}


class QuadraticProblems(Problems):
    def __init__(self, W, y, theta0):
        self.W, self.y, self.theta0 = W, y, theta0
        self.batch = W.shape[0]

    def init_params(self):
        return {"theta": self.theta0.clone()}

    def loss(self, params, t):
        theta = params["theta"]
        theta = theta.view(-1, self.batch, theta.shape[-1])
        r = torch.einsum("bij,rbj->rbi", self.W, theta) - self.y
        return r.pow(2).sum(-1).reshape(-1)


class Quadratic(Task):
    """f(theta) = ||W theta - y||^2 (paper section 3.1)."""

    def __init__(self, dim: int = 10, distribution: str = "gaussian", **kw):
        super().__init__(**kw)
        if distribution not in ("gaussian", "uniform"):
            raise ValueError(f"task.distribution={distribution} is unknown: choose gaussian or uniform")
        self.dim, self.distribution = int(dim), distribution

    def sample(self, split, n, seed, index=0, device="cpu"):
        rng, d = problem_rng(split, seed, index), self.dim
        if self.distribution == "gaussian":
            W, y, theta0 = randn(rng, n, d, d), randn(rng, n, d), randn(rng, n, d)
        else:  # the official code's variant
            W = torch.from_numpy(rng.random((n, d, d), dtype=np.float32))
            y = torch.from_numpy(rng.random((n, d), dtype=np.float32))
            theta0 = randn(rng, n, d, std=0.01)
        return QuadraticProblems(W.to(device), y.to(device), theta0.to(device))
