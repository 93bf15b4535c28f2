"""Learned optimizers: RNNs that map each coordinate's gradient to its update (paper section 2.1, Appendix A, D).

Same interface as `baselines`: `init_state(params)` and `step(params, grads, state)`, on dicts of named tensors
[N, *shape] (N problems). Parameters are grouped by name prefix, one network per group (`groups`), so CIFAR's conv
and fully connected parameters can get separate LSTMs; within a group every coordinate of every parameter of a
problem is one row of the network's batch, which is also the set a global averaging cell averages over.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def preprocess(g: torch.Tensor, kind: str, p: float) -> torch.Tensor:
    """Gradient features [..., F]: the raw gradient, or Appendix A's (log|g|/p, sgn g) / (-1, e^p g)."""
    if kind == "none":
        return g.unsqueeze(-1)
    if kind == "log_sign":
        big = g.abs() >= math.exp(-p)
        first = torch.where(big, g.abs().clamp_min(math.exp(-p)).log() / p, torch.full_like(g, -1.0))
        second = torch.where(big, g.sign(), math.exp(p) * g)
        return torch.stack([first, second], -1)
    raise ValueError(f"unknown preprocess {kind!r}: choose none or log_sign")


def tree_detach(x):
    """Detach every tensor in a nested dict / list / tuple (truncated BPTT cuts the graph here)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, dict):
        return {k: tree_detach(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(tree_detach(v) for v in x)
    return x


class CoordinatewiseLSTM(nn.Module):
    """A stack of LSTM cells applied to every coordinate; `gac` cells per layer are global averaging cells."""

    def __init__(self, hidden=20, layers=2, gac=0, preprocess="none", p=10.0, output_scale=1.0):
        super().__init__()
        if not 0 <= gac <= hidden:
            raise ValueError(f"optimizer.gac={gac} must be between 0 and optimizer.hidden={hidden}")
        self.hidden, self.gac, self.kind, self.p, self.scale = hidden, gac, preprocess, p, output_scale
        features = 2 if preprocess == "log_sign" else 1
        self.cells = nn.ModuleList(nn.LSTMCell(features if i == 0 else hidden, hidden) for i in range(layers))
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():
            for cell in self.cells:  # forget-gate bias 1: remember by default
                cell.bias_ih[hidden : 2 * hidden].fill_(1.0)
            self.out.weight.mul_(0.1)
            self.out.bias.zero_()

    def init_state(self, N: int, n: int, device, dtype):
        z = torch.zeros(N * n, self.hidden, device=device, dtype=dtype)
        return [(z, z) for _ in self.cells]

    def _average(self, h, N: int):
        hv = h.view(N, -1, self.hidden)
        avg = hv[..., : self.gac].mean(1, keepdim=True).expand(-1, hv.shape[1], -1)
        return torch.cat([avg, hv[..., self.gac :]], -1).reshape(h.shape)

    def forward(self, g: torch.Tensor, state):
        """Updates [N, n] for gradients [N, n] of N problems with n coordinates each."""
        N = g.shape[0]
        x = preprocess(g.reshape(-1), self.kind, self.p)
        new_state = []
        for cell, (h, c) in zip(self.cells, state, strict=True):
            h, c = cell(x, (h, c))
            if self.gac:
                h = self._average(h, N)
            new_state.append((h, c))
            x = h
        return self.out(x).view(N, -1) * self.scale, new_state


class LearnedOptimizer(nn.Module):
    """Networks that propose the optimizee's updates, one per named parameter group."""

    learned = True

    def __init__(self, name: str, groups: dict | None = None, **net_kwargs):
        super().__init__()
        self.name = name
        self.groups = dict(groups) if groups else {"all": [""]}
        self.nets = nn.ModuleDict({g: self.make_net(**net_kwargs) for g in self.groups})

    def make_net(self, **kw) -> nn.Module:
        raise NotImplementedError

    def assign(self, names) -> dict[str, list[str]]:
        """Which network updates which parameters (first matching prefix); every parameter must find one."""
        out = {g: [] for g in self.groups}
        for name in sorted(names):
            group = next((g for g, prefixes in self.groups.items() if any(name.startswith(p) for p in prefixes)),
                         None)
            if group is None:
                raise ValueError(f"parameter {name!r} matches no group of optimizer.groups={self.groups}")
            out[group].append(name)
        return {g: ns for g, ns in out.items() if ns}

    def init_state(self, params):
        ref = next(iter(params.values()))
        N = ref.shape[0]
        return {g: self.nets[g].init_state(N, sum(params[k][0].numel() for k in ks), ref.device, ref.dtype)
                for g, ks in self.assign(params).items()}

    def step(self, params, grads, state):
        new_params, new_state = {}, {}
        for g, names in self.assign(params).items():
            N = params[names[0]].shape[0]
            flat = torch.cat([grads[k].reshape(N, -1) for k in names], 1)
            update, new_state[g] = self.nets[g](flat, state[g])
            for k, u in zip(names, update.split([params[k][0].numel() for k in names], 1), strict=True):
                new_params[k] = params[k] + u.view_as(params[k])
        return new_params, new_state


class LSTMOptimizer(LearnedOptimizer):
    """The coordinatewise LSTM optimizer (with `gac` > 0: LSTM+GAC, Appendix D)."""

    def make_net(self, **kw):
        return CoordinatewiseLSTM(**kw)
