"""Convolutional nets with batch norm (paper section 3.3, the official code's CIFAR-10 network), many at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ParamSpec, randn, replicas
from .images import ImageBatch, ImageFamily

EPS = 1e-5  # batch norm's


class ConvNetBatch(ImageBatch):
    """N = R * B nets as one computation: every conv layer is one grouped convolution (a group per net), every batch
    norm one call over N * channels, the fully connected layers batched matrix products."""

    def __init__(self, data, specs, init, conv_layers: int, minibatch: int, key: tuple):
        super().__init__(data, specs, init, minibatch, key)
        self.conv_layers = conv_layers

    def loss_with(self, params, inputs):
        x, labels = inputs  # [B, m, C, H, W], [B, m]
        B, m, C, H, W = x.shape
        R = replicas(params, B)
        N = R * B
        # net r * B + b sees problem b's minibatch: images as [m, N * C, H, W], one channel group per net
        h = x.unsqueeze(0).expand(R, -1, -1, -1, -1, -1).permute(2, 0, 1, 3, 4, 5).reshape(m, N * C, H, W)
        for i in range(self.conv_layers):
            w = params[f"conv{i}.w"]  # [N, out, in, k, k]
            h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), padding=w.shape[-1] // 2, groups=N)
            # batch norm on each minibatch's statistics; scale and shift are the optimizee's parameters
            h = F.batch_norm(h, None, None, params[f"conv{i}.scale"].reshape(-1), params[f"conv{i}.shift"].reshape(-1),
                             training=True, eps=EPS)
            h = F.max_pool2d(F.relu(h), 2)
        h = h.reshape(m, N, -1).transpose(0, 1)  # [N, m, features]
        h = torch.bmm(h, params["fc.w"])
        mean, var = h.mean(1, keepdim=True), h.var(1, unbiased=False, keepdim=True)
        h = (h - mean) / (var + EPS).sqrt() * params["fc.scale"].unsqueeze(1) + params["fc.shift"].unsqueeze(1)
        logits = torch.baddbmm(params["out.b"].unsqueeze(1), F.relu(h), params["out.w"])  # [N, m, classes]
        return self.cross_entropy(logits.view(R, B, m, -1), labels)


class ConvNetFamily(ImageFamily):
    """`conv_layers` x (conv `kernel` x `kernel`, `channels` channels, SAME padding, batch norm, ReLU, 2x2 max-pool),
    then a fully connected layer of `fc_units` with batch norm and ReLU, then one logit per class. Weights ~ N(0,
    init_std^2); batch norm scales start at 1 and shifts at 0 (a zero-mean scale would start every net constant).
    A `family` may vary the widths (channels, fc_units)."""

    varies = ("channels", "fc_units")

    def __init__(self, channels: int = 16, conv_layers: int = 3, kernel: int = 5, fc_units: int = 32, **kw):
        super().__init__(**kw)
        self.channels, self.conv_layers, self.kernel, self.fc_units = int(channels), int(conv_layers), int(kernel), \
            int(fc_units)

    def specs(self):
        c, h, w = self.image_shape
        specs, k = [], self.kernel
        for i in range(self.conv_layers):
            specs += [ParamSpec(f"conv{i}.w", (self.channels, c, k, k), "conv"),
                      ParamSpec(f"conv{i}.scale", (self.channels,), "conv"),
                      ParamSpec(f"conv{i}.shift", (self.channels,), "conv")]
            c, h, w = self.channels, h // 2, w // 2
        return (*specs, ParamSpec("fc.w", (c * h * w, self.fc_units), "fc"),
                ParamSpec("fc.scale", (self.fc_units,), "fc"), ParamSpec("fc.shift", (self.fc_units,), "fc"),
                ParamSpec("out.w", (self.fc_units, len(self.classes)), "fc"),
                ParamSpec("out.b", (len(self.classes),), "fc"))

    def draw(self, split, n, rng, key):
        specs = self.specs()
        init = {}
        for s in specs:
            if s.name.endswith(".scale"):
                init[s.name] = torch.ones(n, *s.shape)
            elif s.name.endswith(".shift"):
                init[s.name] = torch.zeros(n, *s.shape)
            else:
                init[s.name] = randn(rng, n, *s.shape, std=self.init_std)
        return ConvNetBatch(self.splits()[split], specs, init, self.conv_layers, self.minibatch, key)
