"""What every dataset loader returns: labelled images per split, and the record of where they came from."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import L2LError


@dataclass
class Split:
    """Images [n, C, H, W] float32 in [0, 1] and labels [n] int64; `to(device)` keeps one copy per device."""

    images: torch.Tensor
    labels: torch.Tensor
    _copies: dict = field(default_factory=dict, repr=False, compare=False)

    def to(self, device) -> Split:
        device = torch.device(device)
        if self.images.device == device:
            return self
        if device not in self._copies:  # a dataset moves to a GPU once per run, not once per problem batch
            self._copies[device] = Split(self.images.to(device), self.labels.to(device))
        return self._copies[device]


def restrict(split: Split, classes: tuple[int, ...]) -> Split:
    """Only the images of these labels, relabelled 0..k-1 in the order given."""
    if classes == tuple(range(len(classes))) and int(split.labels.max()) < len(classes):
        return split
    keep = torch.isin(split.labels, torch.tensor(classes))
    relabel = torch.full((int(split.labels.max()) + 1,), -1, dtype=torch.int64)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    return Split(split.images[keep], relabel[split.labels[keep]])


def from_uint8(images: np.ndarray, labels: np.ndarray, shape: tuple[int, int, int], what: str) -> Split:
    """A Split from uint8 pixels [n, ...] (reshaped to [n, *shape]) and integer labels."""
    if len(images) != len(labels):
        raise L2LError(f"{what} images and labels disagree: {len(images)} images, {len(labels)} labels")
    pixels = torch.from_numpy(np.ascontiguousarray(images).reshape(len(images), *shape).astype(np.float32) / 255.0)
    return Split(pixels, torch.from_numpy(labels.astype(np.int64)))


def describe(source: str, origin: str, splits: dict[str, Split]) -> dict:
    """The record of a dataset that every run's summary carries: source, origin and image counts per split."""
    return {"source": source, "origin": origin, **{f"{k}_images": len(v.labels) for k, v in splits.items()}}
