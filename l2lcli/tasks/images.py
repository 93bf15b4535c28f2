"""What the image-classification families share: a dataset (and label subset) per split, a minibatch per problem
and step, cross-entropy on logits."""

from __future__ import annotations

import torch

from ..data.datasets import SHAPES, class_list, load_dataset
from ..data.splits import Split, restrict
from .base import ProblemBatch, TaskFamily, problem_rng


class ImageBatch(ProblemBatch):
    """B classifiers on one image split; problem b draws its own minibatch at every step (replicas share it)."""

    def __init__(self, data: Split, specs, init: dict, minibatch: int, key: tuple):
        self.data, self.specs, self.params0, self.buffers = data, specs, init, {}
        self.batch = next(iter(init.values())).shape[0]
        self.minibatch, self.key, self._cached = minibatch, key, (None, None)

    @property
    def images(self) -> torch.Tensor:
        return self.data.images

    @property
    def labels(self) -> torch.Tensor:
        return self.data.labels

    def init_params(self):
        return {k: v.clone() for k, v in self.params0.items()}

    def indices(self, t: int) -> torch.Tensor:
        """The minibatch of every problem at step t, [B, minibatch]: a function of the problem key and t only."""
        if self._cached[0] != t:
            rng = problem_rng(*self.key, step=t)
            idx = torch.from_numpy(rng.integers(0, len(self.labels), (self.batch, self.minibatch)))
            self._cached = (t, idx.to(self.labels.device))
        return self._cached[1]

    def step_inputs(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Step t's minibatch of every problem: images [B, m, C, H, W] and labels [B, m]."""
        idx = self.indices(t)
        return self.images[idx], self.labels[idx]

    @staticmethod
    def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy [N] of logits [R, B, m, classes] on the minibatch labels [B, m]."""
        R, B, m, _ = logits.shape
        y = labels.expand(R, B, m)
        nll = -torch.log_softmax(logits, -1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        return nll.mean(-1).reshape(-1)


class ImageFamily(TaskFamily):
    """Classifiers on `dataset` (mnist, fashion_mnist, cifar10), restricted to `classes` (null: all ten, a named
    subset such as cifar5, or a list of labels); minibatches of `minibatch`, weights ~ N(0, init_std^2)."""

    def __init__(self, dataset: str = "mnist", classes=None, minibatch: int = 128, init_std: float = 0.01,
                 source: str = "auto", root: str = "data", **kw):
        super().__init__(**kw)
        self.dataset, self.classes = dataset, class_list(classes)
        self.minibatch, self.init_std, self.source, self.root = int(minibatch), float(init_std), source, root
        self._data, self._info = None, {}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return SHAPES[self.dataset]

    def splits(self) -> dict[str, Split]:
        if self._data is None:
            data, info = load_dataset(self.dataset, self.root, self.source)
            self._data = {k: restrict(v, self.classes) for k, v in data.items()}
            self._info = {**info, "classes": list(self.classes),
                          **{f"{k}_images": len(v.labels) for k, v in self._data.items()}}
        return self._data

    def describe(self):
        self.splits()
        return dict(self._info)

    def member(self, rng):
        if self.family:
            self.splits()  # loaded before the copy, so that every member shares it
        return super().member(rng)
