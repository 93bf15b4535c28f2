"""Quadratics f(theta) = ||W theta - y||^2 (paper section 3.1)."""

from __future__ import annotations

import numpy as np
import torch

from .base import ParamSpec, ProblemBatch, TaskFamily, by_replica, randn

DISTRIBUTIONS = ("gaussian", "uniform")


class QuadraticBatch(ProblemBatch):
    def __init__(self, W, y, theta0):
        self.W, self.y, self.theta0, self.buffers = W, y, theta0, {}
        self.batch = W.shape[0]
        self.specs = (ParamSpec("theta", (W.shape[-1],), "vector"),)

    def init_params(self):
        return {"theta": self.theta0.clone()}

    def step_inputs(self, t):
        return ()

    def loss_with(self, params, inputs):
        theta = by_replica(params["theta"], self.batch)
        r = torch.einsum("bij,rbj->rbi", self.W, theta) - self.y
        return r.pow(2).sum(-1).reshape(-1)


class QuadraticFamily(TaskFamily):
    """W (dim x dim), y and theta_0 Gaussian (the paper), or W, y ~ U[0, 1) and theta_0 ~ N(0, 0.01^2) (the
    official code's `uniform`). A `family` may vary the dimension."""

    varies = ("dim",)

    def __init__(self, dim: int = 10, distribution: str = "gaussian", **kw):
        super().__init__(**kw)
        self.dim, self.distribution = int(dim), distribution

    def specs(self):
        return (ParamSpec("theta", (self.dim,), "vector"),)

    def describe(self):
        return {"source": "generated", "origin": f"{self.distribution} W, y and theta_0 from each problem's seed"}

    def draw(self, split, n, rng, key):
        d = self.dim
        if self.distribution == "gaussian":
            W, y, theta0 = randn(rng, n, d, d), randn(rng, n, d), randn(rng, n, d)
        else:
            W = torch.from_numpy(rng.random((n, d, d), dtype=np.float32))
            y = torch.from_numpy(rng.random((n, d), dtype=np.float32))
            theta0 = randn(rng, n, d, std=0.01)
        return QuadraticBatch(W, y, theta0)
