"""Intervals over problems: one way, used by every command that reports a ratio."""

from __future__ import annotations

import numpy as np


def bootstrap_ratio(a, b, samples: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """mean(a) / mean(b) over the same problems, and its percentile bootstrap interval: problems are resampled with
    replacement, as pairs (a problem's two losses stay together)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError("bootstrap_ratio needs two equally long, non-empty lists of per-problem values")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan"), float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, len(a), (samples, len(a)))
    ratios = a[idx].mean(1) / b[idx].mean(1)
    low, high = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(a.mean() / b.mean()), float(low), float(high)
