"""Task families: each samples batches of problems by split and seed.

A `Problems` batch holds B problems. Its parameters are named tensors with a leading problem dimension of size
N = R * B (R replicas of the batch, e.g. one per learning rate in a sweep; replica r of problem b sits at r * B + b),
and `loss(params, t)` returns the N losses at step t, one vectorized computation for all of them.
"""

from __future__ import annotations

import numpy as np
import torch

SPLITS = ("train", "validation", "test")


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


class MLPProblems(Problems):
    """B multilayer perceptrons on one image split; problem b draws its own minibatch at every step."""

    def __init__(self, data, init: dict, activation: str, minibatch: int, key: tuple):
        self.images, self.labels, self.params0 = data.images, data.labels, init
        self.batch = next(iter(init.values())).shape[0]
        self.act = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}[activation]
        self.minibatch, self.key, self._cached = minibatch, key, (None, None)

    def init_params(self):
        return {k: v.clone() for k, v in self.params0.items()}

    def indices(self, t: int) -> torch.Tensor:
        """The minibatch of every problem at step t, [B, minibatch]: a function of the problem key and t only."""
        if self._cached[0] != t:
            rng = problem_rng(*self.key, step=t)
            idx = torch.from_numpy(rng.integers(0, len(self.labels), (self.batch, self.minibatch)))
            self._cached = (t, idx.to(self.labels.device))
        return self._cached[1]

    def loss(self, params, t):
        idx = self.indices(t)
        x, y = self.images[idx], self.labels[idx]  # [B, m, 784], [B, m]
        B, m = y.shape
        R = params["out.w"].shape[0] // B
        names = sorted(k[:-2] for k in params if k.endswith(".w") and k != "out.w") + ["out"]
        for i, name in enumerate(names):
            w, b = params[f"{name}.w"], params[f"{name}.b"]
            w, b = w.view(R, B, *w.shape[1:]), b.view(R, B, 1, -1)
            if i == 0:  # the images are shared by all replicas: one bmm over [B] with replicas as extra columns
                d_out = w.shape[-1]
                h = torch.bmm(x, w.permute(1, 2, 0, 3).reshape(B, -1, R * d_out))
                h = h.view(B, m, R, d_out).permute(2, 0, 1, 3) + b
            else:
                h = torch.matmul(h, w) + b
            if name != "out":
                h = self.act(h)
        logp = torch.log_softmax(h, -1)
        nll = -logp.gather(-1, y.expand(R, B, m).unsqueeze(-1)).squeeze(-1)
        return nll.mean(-1).reshape(-1)


class MNIST(Task):
    """Paper section 3.2: an MLP (sigmoid, 20 hidden units) on MNIST, cross-entropy, minibatches of 128."""

    def __init__(self, hidden: int = 20, layers: int = 1, activation: str = "sigmoid", minibatch: int = 128,
                 init_std: float = 0.01, source: str = "auto", root: str = "data", **kw):
        super().__init__(**kw)
        if activation not in ("sigmoid", "relu", "tanh"):
            raise ValueError(f"task.activation={activation} is unknown: choose sigmoid, relu or tanh")
        self.hidden, self.layers, self.activation = int(hidden), int(layers), activation
        self.minibatch, self.init_std, self.source, self.root = int(minibatch), float(init_std), source, root
        self._data, self._info = None, {}

    def splits(self):
        if self._data is None:
            from .data import load_mnist
            self._data, self._info = load_mnist(self.source, self.root)
        return self._data

    def describe(self):
        self.splits()
        return dict(self._info)

    def shapes(self) -> dict[str, tuple]:
        sizes = [784] + [self.hidden] * self.layers
        shapes = {}
        for i in range(self.layers):
            shapes[f"layer{i}.w"], shapes[f"layer{i}.b"] = (sizes[i], sizes[i + 1]), (sizes[i + 1],)
        shapes["out.w"], shapes["out.b"] = (sizes[-1], 10), (10,)
        return shapes

    def sample(self, split, n, seed, index=0, device="cpu"):
        data = self.splits()[split]
        rng = problem_rng(split, seed, index)
        init = {k: randn(rng, n, *s, std=self.init_std).to(device) for k, s in self.shapes().items()}
        if data.images.device != torch.device(device):
            data = type(data)(data.images.to(device), data.labels.to(device))
            self._data[split] = data
        return MLPProblems(data, init, self.activation, self.minibatch, (split, seed, index))
