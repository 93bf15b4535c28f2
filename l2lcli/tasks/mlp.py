"""Multilayer perceptrons on an image dataset, cross-entropy on minibatches (paper section 3.2: MNIST)."""

from __future__ import annotations

import torch

from ..data.mnist import SHAPE, load_mnist
from .base import ParamSpec, ProblemBatch, TaskFamily, by_replica, problem_rng, randn

ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


class MLPBatch(ProblemBatch):
    """B MLPs on one image split; problem b draws its own minibatch at every step."""

    def __init__(self, data, specs, init: dict, activation: str, minibatch: int, key: tuple):
        self.data, self.specs, self.params0, self.buffers = data, specs, init, {}
        self.batch = next(iter(init.values())).shape[0]
        self.layers = [s.name[:-2] for s in specs if s.name.endswith(".w")]  # input to output
        self.act, self.minibatch, self.key, self._cached = ACTIVATIONS[activation], minibatch, key, (None, None)

    @property
    def images(self) -> torch.Tensor:
        return self.data.images.flatten(1)

    @property
    def labels(self) -> torch.Tensor:
        return self.data.labels

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
        x, y = self.images[idx], self.labels[idx]  # [B, m, pixels], [B, m]
        B, m = y.shape
        for i, name in enumerate(self.layers):
            w, b = by_replica(params[f"{name}.w"], B), by_replica(params[f"{name}.b"], B).unsqueeze(2)
            R = w.shape[0]
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


class MLPFamily(TaskFamily):
    """MLPs with `layers` hidden layers of `hidden` units on MNIST, theta_0 ~ N(0, init_std^2); the paper's: one
    hidden layer of 20 sigmoid units, minibatches of 128."""

    def __init__(self, hidden: int = 20, layers: int = 1, activation: str = "sigmoid", minibatch: int = 128,
                 init_std: float = 0.01, source: str = "auto", root: str = "data", **kw):
        super().__init__(**kw)
        self.hidden, self.layers, self.activation = int(hidden), int(layers), activation
        self.minibatch, self.init_std, self.source, self.root = int(minibatch), float(init_std), source, root
        self._data, self._info = None, {}

    def splits(self):
        if self._data is None:
            self._data, self._info = load_mnist(self.source, self.root)
        return self._data

    def describe(self):
        self.splits()
        return dict(self._info)

    def specs(self):
        pixels = SHAPE[0] * SHAPE[1] * SHAPE[2]
        sizes = [pixels] + [self.hidden] * self.layers + [10]
        names = [f"layer{i}" for i in range(self.layers)] + ["out"]
        specs = []
        for name, d_in, d_out in zip(names, sizes[:-1], sizes[1:], strict=True):
            specs += [ParamSpec(f"{name}.w", (d_in, d_out), "fc"), ParamSpec(f"{name}.b", (d_out,), "fc")]
        return tuple(specs)

    def draw(self, split, n, rng, key):
        specs = self.specs()
        init = {s.name: randn(rng, n, *s.shape, std=self.init_std) for s in specs}
        return MLPBatch(self.splits()[split], specs, init, self.activation, self.minibatch, key)
