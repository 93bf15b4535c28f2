"""A trained learned optimizer as an ordinary `torch.optim.Optimizer`, for any PyTorch model."""

from __future__ import annotations

import torch

from ..runs import load_rule
from .learned import LearnedOptimizer


class TorchOptimizer(torch.optim.Optimizer):
    """A trained learned optimizer as an ordinary `torch.optim.Optimizer` for any model.

        opt = TorchOptimizer.from_checkpoint("outputs/meta-train/.../best.pt", model.named_parameters())
        loss.backward(); opt.step()

    Parameter names (and `kinds`, {name: kind}, for groups that select `kind:K`) pick the network of each
    parameter (the rule's `groups`); the model's parameters are one problem's coordinates, as in meta-training.
    """

    def __init__(self, named_parameters, rule: LearnedOptimizer, kinds: dict[str, str] | None = None):
        named = list(named_parameters)
        super().__init__([p for _, p in named], {})
        self.names, self.rule, self.rule_state = [n for n, _ in named], rule.eval(), None
        self.kinds = kinds

    @classmethod
    def from_checkpoint(cls, path, named_parameters, kinds: dict[str, str] | None = None) -> TorchOptimizer:
        return cls(named_parameters, load_rule(path), kinds)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"]]
        batch = {n: p.unsqueeze(0) for n, p in zip(self.names, params, strict=True)}
        grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)).unsqueeze(0)
                 for n, p in zip(self.names, params, strict=True)}
        if self.rule_state is None:
            self.rule_state = self.rule.init_state(batch, self.kinds)
        new, self.rule_state = self.rule.step(batch, grads, self.rule_state)
        for n, p in zip(self.names, params, strict=True):
            p.copy_(new[n][0])
        return loss
