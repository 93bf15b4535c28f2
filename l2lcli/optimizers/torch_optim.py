"""A trained learned optimizer as an ordinary `torch.optim.Optimizer`, for any PyTorch model."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ..errors import L2LError
from .learned import LearnedOptimizer

NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class TorchOptimizer(torch.optim.Optimizer):
    """A trained learned optimizer as an ordinary `torch.optim.Optimizer`:

        opt = TorchOptimizer.pretrained("mnist", model)          # or .from_checkpoint("outputs/.../best.pt", model)
        for x, y in data:
            opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()

    `params` is a model, its `named_parameters()`, plain parameters, or parameter groups (dicts with "params" and,
    optionally, "lr": a factor on the rule's updates, 1 = as meta-trained, which LR schedulers can change; "net":
    the rule's network for the whole group). Every parameter is one coordinate set of one problem, as in
    meta-training; the rule's networks are given to parameters by `roles` (see there). A parameter without a
    gradient at a step is left as it is (the rule sees a zero gradient for it). `state_dict()` holds the rule's
    recurrent state and weights, so a loop resumed from it continues the same trajectory.
    """

    def __init__(self, params, rule: LearnedOptimizer, kinds: dict[str, str] | None = None):
        if not getattr(rule, "learned", False):
            raise L2LError(f"TorchOptimizer runs learned optimizers; for {getattr(rule, 'name', rule)} use "
                           "torch.optim's own")
        groups, self.names, self.roles = _groups(params, kinds)
        super().__init__(groups, {"lr": 1.0, "net": None})
        self.rule, self.rule_state = rule.eval().requires_grad_(False), None
        self._assign()  # an unknown network or a parameter no network takes: refused now, not at the first step

    @classmethod
    def from_checkpoint(cls, path, params, kinds: dict[str, str] | None = None) -> TorchOptimizer:
        """The rule trained in a meta-train run (its folder, best.pt or last.pt)."""
        from ..runs import load_rule
        return cls(params, load_rule(path), kinds)

    @classmethod
    def pretrained(cls, name: str, params, kinds: dict[str, str] | None = None) -> TorchOptimizer:
        """A rule shipped with l2l (`l2l pretrained` lists them, with their cards)."""
        from ..pretrained import path
        return cls.from_checkpoint(path(name), params, kinds)

    def add_param_group(self, group: dict) -> None:
        if getattr(self, "rule_state", None) is not None:
            raise L2LError("TorchOptimizer: add_param_group after the first step would change the problem the rule "
                           "sees: give every group when the optimizer is made")
        super().add_param_group(group)
        if hasattr(self, "rule"):
            self._assign()

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _assign(self) -> dict[str, list[str]]:
        """Which of the rule's networks updates which parameter (by name): the group's "net", else the rule's
        selectors matched against each parameter's role."""
        ids = {id(p): n for n, p in self.names.items()}
        fixed, free = {}, {}
        for group in self.param_groups:
            for p in group["params"]:
                if id(p) not in ids:  # a group added after __init__: named like plain parameters
                    ids[id(p)] = self._name(p)
                name = ids[id(p)]
                if group["net"] is not None:
                    if group["net"] not in self.rule.groups:
                        raise L2LError(f"TorchOptimizer: net '{group['net']}' is not one of the rule's networks "
                                       f"({', '.join(self.rule.groups)})")
                    fixed.setdefault(group["net"], []).append(name)
                else:
                    free[name] = self.roles[name]
        by_role = self.rule.assign([alias for alias, _ in free.values()], dict(free.values())) if free else {}
        back = {alias: name for name, (alias, _) in free.items()}
        out = {g: [back[a] for a in aliases] for g, aliases in by_role.items()}
        for g, names in fixed.items():
            out[g] = sorted(out.get(g, []) + names)
        return out

    def _name(self, p: torch.Tensor) -> str:
        name = f"param{len(self.names)}"
        self.names[name] = p
        self.roles[name] = roles([(name, p)])[name]
        return name

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = self._params()
        ref = _check(params)
        self.rule.to(ref.device)
        dtype = next(self.rule.parameters()).dtype  # the rule runs in its own precision; the model keeps its own
        names = {id(p): n for n, p in self.names.items()}
        grads = {names[id(p)]: (p.grad if p.grad is not None else torch.zeros_like(p)).to(dtype).unsqueeze(0)
                 for p in params}
        if self.rule_state is None:
            self.rule_state = self.rule.init_state(grads, groups=self._assign())
        updates, self.rule_state = self.rule.updates(grads, self.rule_state)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(updates[names[id(p)]][0].to(p.dtype), alpha=group["lr"])
        return loss

    def state_dict(self) -> dict:
        """torch.optim's state dict plus the rule's recurrent state (None before the first step) and its weights."""
        sd = super().state_dict()
        sd["rule_state"] = self.rule_state
        sd["rule_weights"] = self.rule.state_dict()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        if "rule_state" not in state_dict:
            raise L2LError("TorchOptimizer.load_state_dict: this state dict has no rule_state; pass one written by "
                           "TorchOptimizer.state_dict()")
        rule_state, weights = state_dict.pop("rule_state"), state_dict.pop("rule_weights", None)
        try:
            super().load_state_dict(state_dict)
        except ValueError as e:  # torch's own check: other groups, other parameter counts
            raise L2LError(f"TorchOptimizer.load_state_dict: the state does not fit these parameters ({e}): load "
                           "it into the same model") from None
        if weights is not None:
            try:
                self.rule.load_state_dict(weights)
            except RuntimeError as e:
                raise L2LError("TorchOptimizer.load_state_dict: the saved rule's weights do not fit this rule "
                               f"({str(e).splitlines()[0][:100]}): make it with the same checkpoint") from None
        if rule_state is not None:
            device = _check(self._params()).device
            rule_state = _to(rule_state, device)
            saved = {n for names in rule_state["groups"].values() for n in names}
            if saved != set(self.names):
                raise L2LError("TorchOptimizer.load_state_dict: the state was saved for other parameters "
                               f"({len(saved)} named, {len(self.names)} here): load it into the same model")
        self.rule_state = rule_state


def _groups(params, kinds: dict[str, str] | None) -> tuple[list[dict], dict[str, torch.Tensor], dict]:
    """torch.optim's parameter groups, every parameter's name and its role (alias, kind) for the rule."""
    if isinstance(params, nn.Module):
        module = params
        named, found = list(module.named_parameters()), roles(module)
        groups = [{"params": [p for _, p in named]}]
    else:
        groups = list(params) if isinstance(params, Iterable) and not isinstance(params, torch.Tensor) else None
        if not groups:
            raise L2LError("TorchOptimizer: no parameters given (or one bare tensor): pass a model, "
                           "model.named_parameters(), a list of parameters or parameter groups")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        named = []
        for group in groups:
            group["params"] = list(group["params"])
            for i, item in enumerate(group["params"]):
                name, p = item if isinstance(item, tuple) else (f"param{len(named)}", item)
                named.append((name, p))
                group["params"][i] = p
        found = roles(named)
    names = dict(named)
    if len(names) != len(named):
        raise L2LError("TorchOptimizer: two parameters share a name: pass each parameter once")
    if kinds:
        found = {n: (alias, kinds.get(n, kind)) for n, (alias, kind) in found.items()}
    return groups, names, found


def roles(model_or_named) -> dict[str, tuple[str, str]]:
    """Each parameter's role in the tasks' own terms, (alias, kind), so a rule meta-trained on a task finds its
    networks in a model it never saw. Kind: "conv" for convolutions, "fc" for linear layers, by module type (from
    the tensor's rank for bare named parameters: 3 dimensions or more is a convolution); a norm layer's or a bias's
    parameters share the kind of the layer before them. Alias: layer<i>.<name> for every layer but the last, out.<name>
    for the last (as the MLP task names them): a rule with one network for hidden layers and one for the output
    layer finds both."""
    if isinstance(model_or_named, nn.Module):  # the parameters of each module with some of its own
        units = [(_module_kind(m), [(f"{mn}.{pn}" if mn else pn, p) for pn, p in m.named_parameters(recurse=False)])
                 for mn, m in model_or_named.named_modules()]
        units = [(kind, owned) for kind, owned in units if owned]
    else:
        units = [("conv" if p.dim() >= 3 else "fc" if p.dim() == 2 else "follows", [(n, p)])
                 for n, p in model_or_named]
    layer_kinds, layer_of = [], {}
    for kind, owned in units:
        if kind != "follows" or not layer_kinds:
            layer_kinds.append("fc" if kind == "follows" else kind)
        for name, _ in owned:
            layer_of[name] = len(layer_kinds) - 1
    last = len(layer_kinds) - 1
    return {n: (f"{'out' if i == last else f'layer{i}'}.{n}", layer_kinds[i]) for n, i in layer_of.items()}


def _module_kind(module: nn.Module) -> str:
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, NORMS):
        return "follows"
    return "fc"


def _check(params: list[torch.Tensor]) -> torch.Tensor:
    """The first parameter; refuses what the rule cannot step."""
    devices = {p.device for p in params}
    if len(devices) > 1:
        raise L2LError(f"TorchOptimizer: parameters on {len(devices)} devices ({', '.join(map(str, devices))}): the "
                       "rule steps one model on one device; move the model first")
    for p in params:
        if p.grad is not None and p.grad.is_sparse:
            raise L2LError("TorchOptimizer: sparse gradients are not supported (e.g. nn.Embedding(sparse=True)): "
                           "use dense gradients")
        if p.is_complex() or not p.is_floating_point():
            raise L2LError(f"TorchOptimizer: a {p.dtype} parameter: the rule steps real floating-point parameters")
    return params[0]


def _to(state, device):
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: _to(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to(v, device) for v in state)
    return state
