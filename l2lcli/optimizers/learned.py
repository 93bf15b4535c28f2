"""Learned optimizers: networks that map each coordinate's gradient to its update (paper section 2.1, Appendix D).

Parameters are split into groups, one network per group (`groups`: {net name: [selectors]}), so CIFAR's conv and
fully connected parameters can get separate LSTMs. A selector is a parameter-name prefix, or `kind:K` for every
parameter whose `ParamSpec.kind` is K. Within a group every coordinate of every parameter of a problem is one row
of the network's batch, which is also the set a global averaging cell averages over.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import L2LError
from .lstm import CoordinatewiseLSTM
from .ntm import NTMController

KIND = "kind:"


class LearnedOptimizer(nn.Module):
    """Networks that propose the optimizee's updates, one per named parameter group."""

    learned = True
    compiles_whole = False  # whether torch.compile may take whole steps (a state of fixed shapes: one graph)

    def __init__(self, name: str, groups: dict | None = None, **net_kwargs):
        super().__init__()
        self.name = name
        self.groups = {g: list(s) for g, s in groups.items()} if groups else {"all": [""]}
        self.nets = nn.ModuleDict({g: self.make_net(**net_kwargs) for g in self.groups})

    def make_net(self, **kw) -> nn.Module:
        raise NotImplementedError

    def _selects(self, selector: str, name: str, kind: str | None) -> bool:
        if selector.startswith(KIND):
            return kind == selector[len(KIND):]
        return name.startswith(selector)

    def assign(self, names, kinds: dict[str, str] | None = None) -> dict[str, list[str]]:
        """Which network updates which parameters (the first group with a matching selector), in sorted name order;
        every parameter must find one."""
        kinds = kinds or {}
        out = {g: [] for g in self.groups}
        for name in sorted(names):
            group = next((g for g, sel in self.groups.items()
                          if any(self._selects(s, name, kinds.get(name)) for s in sel)), None)
            if group is None:
                raise L2LError(f"parameter '{name}' (kind {kinds.get(name, 'unknown')}) matches no group of "
                               f"optimizer.groups={self.groups}: add its name prefix or kind:KIND to a group")
            out[group].append(name)
        return {g: ns for g, ns in out.items() if ns}

    def init_state(self, params, kinds: dict[str, str] | None = None, groups: dict[str, list[str]] | None = None):
        """The networks' states, and which parameters each network updates (fixed for the whole run): `groups`
        ({net: [names]}) if given, else the rule's own selectors (see assign)."""
        ref = next(iter(params.values()))
        N = ref.shape[0]
        groups = groups or self.assign(params, kinds)
        nets = {g: self.nets[g].init_state(N, sum(params[k][0].numel() for k in ks), ref.device, ref.dtype)
                for g, ks in groups.items()}
        return {"groups": groups, "nets": nets}

    def updates(self, grads, state):
        """Each parameter's update ({name: tensor shaped like its gradient}) and the new state."""
        out, nets = {}, {}
        for g, names in state["groups"].items():
            N = grads[names[0]].shape[0]
            flat = torch.cat([grads[k].reshape(N, -1) for k in names], 1)
            update, nets[g] = self.nets[g](flat, state["nets"][g])
            for k, u in zip(names, update.split([grads[k][0].numel() for k in names], 1), strict=True):
                out[k] = u.view_as(grads[k])
        return out, {"groups": state["groups"], "nets": nets}

    def step(self, params, grads, state):
        updates, state = self.updates(grads, state)
        return {k: params[k] + u for k, u in updates.items()}, state


class LSTMOptimizer(LearnedOptimizer):
    """The coordinatewise LSTM optimizer (with `gac` > 0: LSTM+GAC, Appendix D)."""

    compiles_whole = True

    def make_net(self, **kw):
        return CoordinatewiseLSTM(**kw)


class NTMOptimizer(LearnedOptimizer):
    """NTM-BFGS (`history: null`, dense memory) and NTM-L-BFGS (`history: k`)."""

    def make_net(self, **kw):
        return NTMController(**kw)
