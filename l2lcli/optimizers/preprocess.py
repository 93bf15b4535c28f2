"""The learned optimizer's input features of a gradient (paper Appendix A)."""

from __future__ import annotations

import math

import torch

KINDS = ("none", "log_sign")


def preprocess(g: torch.Tensor, kind: str, p: float, dim: int = -1) -> torch.Tensor:
    """Gradient features, stacked at `dim`: the raw gradient, or Appendix A's (log|g|/p, sgn g) / (-1, e^p g)."""
    if kind == "none":
        return g.unsqueeze(dim)
    if kind == "log_sign":
        big = g.abs() >= math.exp(-p)
        first = torch.where(big, g.abs().clamp_min(math.exp(-p)).log() / p, torch.full_like(g, -1.0))
        second = torch.where(big, g.sign(), math.exp(p) * g)
        return torch.stack([first, second], dim)
    raise ValueError(f"unknown preprocess {kind!r}: choose {' or '.join(KINDS)}")


def features(kind: str) -> int:
    """How many input features `preprocess` gives per gradient entry."""
    return 2 if kind == "log_sign" else 1
