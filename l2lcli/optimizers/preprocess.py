"""The learned optimizer's input features of a gradient: Appendix A's, or scale-free moments (Lv et al. 2017)."""

from __future__ import annotations

import math

import torch

KINDS = ("none", "log_sign", "moments")


def preprocess(g: torch.Tensor, kind: str, p: float, dim: int = -1) -> torch.Tensor:
    """Stateless gradient features, stacked at `dim`: the raw gradient, or Appendix A's (log|g|/p, sgn g) /
    (-1, e^p g). `moments` keeps averages over steps: see Moments."""
    if kind == "none":
        return g.unsqueeze(dim)
    if kind == "log_sign":
        big = g.abs() >= math.exp(-p)
        first = torch.where(big, g.abs().clamp_min(math.exp(-p)).log() / p, torch.full_like(g, -1.0))
        second = torch.where(big, g.sign(), math.exp(p) * g)
        return torch.stack([first, second], dim)
    raise ValueError(f"unknown preprocess {kind!r}: choose {' or '.join(KINDS)}")


def features(kind: str, momenta=()) -> int:
    """How many input features per gradient entry."""
    return {"log_sign": 2, "moments": 1 + len(momenta)}.get(kind, 1)


class Moments:
    """Scale-free inputs: the gradient and its running averages at several timescales (`momenta`, Wichrowska et
    al. 2017), each divided by the gradient's running RMS (decay `rms_decay`), all bias-corrected as in ADAM.
    Multiplying the loss by any factor leaves them unchanged (Lv et al. 2017), so one learned rule can serve
    problems whose gradients differ by orders of magnitude without seeing their scale."""

    def __init__(self, momenta, rms_decay: float):
        self.momenta, self.rms_decay = tuple(float(b) for b in momenta), float(rms_decay)

    def init_state(self, rows: int, device, dtype) -> dict:
        return {"m": torch.zeros(len(self.momenta), rows, device=device, dtype=dtype),
                "v": torch.zeros(rows, device=device, dtype=dtype),
                "t": torch.zeros((), device=device, dtype=dtype)}

    def __call__(self, g: torch.Tensor, state: dict):
        """Features [1 + len(momenta), rows] of the gradient g [rows], and the new state."""
        t = state["t"] + 1
        m = [b * old + (1 - b) * g for b, old in zip(self.momenta, state["m"], strict=True)]
        v = self.rms_decay * state["v"] + (1 - self.rms_decay) * g * g
        # the dtype's smallest normal number under the root: a coordinate whose gradient was always 0 gets inputs 0,
        # and the root's derivative stays finite (second derivatives) where its square root would be 0/0
        rms = (v / (1 - self.rms_decay ** t) + torch.finfo(g.dtype).tiny).sqrt()
        x = torch.stack([g / rms] + [mb / (1 - b ** t) / rms for b, mb in zip(self.momenta, m, strict=True)])
        return x, {"m": torch.stack(m) if m else state["m"], "v": v, "t": t}


class ProblemInputs:
    """Inputs from a problem's whole gradient g and the rule's last update u (in read-out units), where a
    coordinatewise rule sees one coordinate. Three are shared by all its coordinates: log(|g| / |g_prev|),
    cos(g, g_prev) and the secant step s = -(u . g) / (u . (g - g_prev)), how many more of the last step an exact
    line search along it would take on a quadratic (conjugate gradients' step length). Two are per coordinate: u_i
    and s u_i. A rule with several networks computes them over each network's share of the problem (MNIST's
    hidden-layer and output-layer parameters apart). The three shared ones do not change when the loss is scaled."""

    count = 5

    def init_state(self, N: int, n: int, device, dtype) -> dict:
        return {"g": torch.zeros(N, n, device=device, dtype=dtype), "u": torch.zeros(N, n, device=device, dtype=dtype)}

    def __call__(self, g: torch.Tensor, state: dict) -> torch.Tensor:
        """Features [5, N * n] of gradients g [N, n] (a problem's shared values repeated over its coordinates)."""
        prev, u = state["g"], state["u"]
        tiny = torch.finfo(g.dtype).tiny
        norm, prev_norm = g.norm(dim=1, keepdim=True), prev.norm(dim=1, keepdim=True)
        seen = prev_norm[:, 0] > 0  # the first step has no previous gradient: its features are 0
        ratio = torch.where(seen, (norm.clamp_min(tiny).log() - prev_norm.clamp_min(tiny).log())[:, 0], 0.0)
        # unit vectors first: a product of two norms can overflow or underflow where each alone does not
        cos = ((g / norm.clamp_min(tiny)) * (prev / prev_norm.clamp_min(tiny))).sum(1).clamp(-1, 1)
        curve = (u * (g - prev)).sum(1)
        # a flat or non-convex direction (u . dg <= 0) has no line-search minimum: 0, and the clamp bounds the rest
        convex = curve > 0
        s = torch.where(convex, -(u * g).sum(1) / torch.where(convex, curve, 1.0), 0.0).clamp(-5, 5)
        shared = torch.stack([ratio.clamp(-5, 5), cos, s]).unsqueeze(2).expand(-1, -1, g.shape[1])
        return torch.cat([shared, torch.stack([u, s.unsqueeze(1) * u])], 0).reshape(self.count, -1)

    @staticmethod
    def next_state(g: torch.Tensor, u: torch.Tensor) -> dict:
        """What the next step's inputs need: this gradient and the update just made."""
        return {"g": g, "u": u.detach()}
