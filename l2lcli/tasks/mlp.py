"""Multilayer perceptrons on an image dataset, cross-entropy on minibatches (paper section 3.2: MNIST)."""

from __future__ import annotations

import torch

from .base import ParamSpec, by_replica, randn
from .images import ImageBatch, ImageFamily

ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


class MLPBatch(ImageBatch):
    def __init__(self, data, specs, init, activation: str, minibatch: int, key: tuple):
        super().__init__(data, specs, init, minibatch, key)
        self.layers = [s.name[:-2] for s in specs if s.name.endswith(".w")]  # input to output
        self.act = ACTIVATIONS[activation]

    def loss_with(self, params, inputs):
        x, labels = inputs
        B, m = x.shape[:2]
        x = x.reshape(B, m, -1)  # [B, m, pixels]
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
        return self.cross_entropy(h, labels)


class MLPFamily(ImageFamily):
    """MLPs with `layers` hidden layers of `hidden` units; the paper's: one hidden layer of 20 sigmoid units on MNIST,
    minibatches of 128. A `family` may vary depth, width and activation (meta-training on many nets)."""

    varies = ("layers", "hidden", "activation")

    def __init__(self, hidden: int = 20, layers: int = 1, activation: str = "sigmoid", **kw):
        super().__init__(**kw)
        self.hidden, self.layers, self.activation = int(hidden), int(layers), activation

    def specs(self):
        c, h, w = self.image_shape
        sizes = [c * h * w] + [self.hidden] * self.layers + [len(self.classes)]
        names = [f"layer{i}" for i in range(self.layers)] + ["out"]
        specs = []
        for name, d_in, d_out in zip(names, sizes[:-1], sizes[1:], strict=True):
            specs += [ParamSpec(f"{name}.w", (d_in, d_out), "fc"), ParamSpec(f"{name}.b", (d_out,), "fc")]
        return tuple(specs)

    def draw(self, split, n, rng, key):
        specs = self.specs()
        init = {s.name: randn(rng, n, *s.shape, std=self.init_std) for s in specs}
        return MLPBatch(self.splits()[split], specs, init, self.activation, self.minibatch, key)
