"""Hand-designed optimizers as pure update rules on batched parameters (Torch7 `optim` defaults).

The interface of every update rule (see the package's docstring), on dicts of named tensors [N, *shape]. `lr` may be
a float or a tensor [N] (one learning rate per problem replica), which is how a sweep runs every learning rate at
once.
"""

from __future__ import annotations

import torch


def _per_problem(x, like: torch.Tensor):
    """Broadcast a scalar or an [N] tensor against a parameter tensor [N, *shape]."""
    if isinstance(x, torch.Tensor):
        return x.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))
    return x


class Baseline:
    """theta <- theta - lr * direction: each rule is its `direction` (also a learned optimizer's nominal term)."""

    learned = False

    def __init__(self, name: str, lr: float | torch.Tensor):
        self.name, self.lr = name, lr

    def init_state(self, params, kinds=None):
        return {"t": 0}

    def direction(self, grads, state):
        """Each gradient's step direction ({name: tensor}, the update being -lr times it) and the new state."""
        raise NotImplementedError

    def step(self, params, grads, state):
        d, state = self.direction(grads, state)
        return {k: p - _per_problem(self.lr, p) * d[k] for k, p in params.items()}, state


class SGD(Baseline):
    def direction(self, grads, state):
        return dict(grads), state


class RMSprop(Baseline):
    """Torch7 optim.rmsprop: m = alpha m + (1 - alpha) g^2; theta -= lr g / (sqrt(m) + eps)."""

    def __init__(self, name, lr, alpha=0.99, eps=1e-8):
        super().__init__(name, lr)
        self.alpha, self.eps = alpha, eps

    def init_state(self, params, kinds=None):
        return {"m": {k: torch.zeros_like(p) for k, p in params.items()}}

    def direction(self, grads, state):
        m = {k: self.alpha * state["m"][k] + (1 - self.alpha) * g * g for k, g in grads.items()}
        return {k: g / (m[k].sqrt() + self.eps) for k, g in grads.items()}, {"m": m}


class Adam(Baseline):
    """Torch7 optim.adam, with bias correction."""

    def __init__(self, name, lr, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(name, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def init_state(self, params, kinds=None):
        zeros = {k: torch.zeros_like(p) for k, p in params.items()}
        return {"t": 0, "m": zeros, "v": {k: z.clone() for k, z in zeros.items()}}

    def direction(self, grads, state):
        """m_hat / (sqrt(v_hat) + eps); `t` may be a tensor (a state that torch.compile carries across steps without
        recompiling)."""
        t = state["t"] + 1
        m = {k: self.beta1 * state["m"][k] + (1 - self.beta1) * g for k, g in grads.items()}
        v = {k: self.beta2 * state["v"][k] + (1 - self.beta2) * g * g for k, g in grads.items()}
        c1, c2 = 1 - self.beta1**t, 1 - self.beta2**t
        return {k: (m[k] / c1) / ((v[k] / c2).sqrt() + self.eps) for k in grads}, {"t": t, "m": m, "v": v}


class NAG(Baseline):
    """Nesterov momentum in the form PyTorch uses (equivalent to Torch7 optim.nag up to a change of variable)."""

    def __init__(self, name, lr, momentum=0.9):
        super().__init__(name, lr)
        self.momentum = momentum

    def init_state(self, params, kinds=None):
        return {"v": {k: torch.zeros_like(p) for k, p in params.items()}}

    def direction(self, grads, state):
        v = {k: self.momentum * state["v"][k] + g for k, g in grads.items()}
        return {k: g + self.momentum * v[k] for k, g in grads.items()}, {"v": v}

