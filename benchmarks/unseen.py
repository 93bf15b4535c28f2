"""Issue 18's unseen-data check: a rule meta-trained on MNIST MLPs, used through the torch.optim adapter on plain
PyTorch MLPs over images it never saw, against torch.optim's optimizers tuned on other seeds.

    python benchmarks/unseen.py --checkpoint RUN [--dataset fashion_mnist] [--steps 100] [--hidden 20 --layers 1]

As a user would: nn.Sequential with PyTorch's own initialisation (not the task's N(0, 0.01)), minibatches of 128 from
the training split, the loss on a fixed 2,048 training images at the last step. Baselines (SGD, NAG, RMSprop, ADAM)
take the best of a log-spaced learning-rate grid on tuning seeds; the learned rule and the tuned baselines are then
run on test seeds never used for tuning. Prints each optimizer's mean final loss and the learned rule's ratio to the
best with a 95% bootstrap interval over test seeds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from l2lcli.data.datasets import DATASETS, load_dataset
from l2lcli.optimizers.torch_optim import TorchOptimizer
from l2lcli.stats import bootstrap_ratio

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
BASELINES = {
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "nag": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True),
    "rmsprop": lambda p, lr: torch.optim.RMSprop(p, lr=lr),
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
}


def mlp(pixels: int, hidden: int, layers: int, activation: str) -> nn.Module:
    sizes = [pixels] + [hidden] * layers
    body = [m for a, b in zip(sizes[:-1], sizes[1:], strict=True) for m in (nn.Linear(a, b), ACTIVATIONS[activation]())]
    return nn.Sequential(nn.Flatten(), *body, nn.Linear(sizes[-1], 10))


def train(make_opt, seed: int, data, args) -> float:
    """The loss on the fixed training images after `args.steps` minibatch steps (inf if it blew up)."""
    images, labels, probe = data
    torch.manual_seed(seed)
    net = mlp(images[0].numel(), args.hidden, args.layers, args.activation)
    opt, order = make_opt(net), torch.Generator().manual_seed(seed)
    for _ in range(args.steps):
        batch = torch.randint(0, len(images), (args.minibatch,), generator=order)
        opt.zero_grad()
        nn.functional.cross_entropy(net(images[batch]), labels[batch]).backward()
        opt.step()
    with torch.no_grad():
        loss = nn.functional.cross_entropy(net(images[probe]), labels[probe]).item()
    return loss if np.isfinite(loss) else float("inf")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a meta-train run folder or .pt (e.g. of task=mnist)")
    ap.add_argument("--dataset", default="fashion_mnist", choices=DATASETS)
    ap.add_argument("--root", default="data")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=20)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--activation", default="sigmoid", choices=sorted(ACTIVATIONS))
    ap.add_argument("--minibatch", type=int, default=128)
    ap.add_argument("--tune-seeds", type=int, default=8)
    ap.add_argument("--test-seeds", type=int, default=32)
    ap.add_argument("--lrs", type=int, default=13, help="log-spaced learning rates from 1e-3 to 10")
    args = ap.parse_args(argv)

    splits, info = load_dataset(args.dataset, args.root)
    images, labels = splits["train"].images, splits["train"].labels
    probe = torch.randperm(len(images), generator=torch.Generator().manual_seed(12345))[:2048]
    data = (images, labels, probe)
    tune = range(10_000, 10_000 + args.tune_seeds)  # never a test seed
    test = range(args.test_seeds)
    start = time.perf_counter()

    def baseline(name, lr):
        return lambda net: BASELINES[name](net.parameters(), lr)

    best = {}
    for name in BASELINES:
        scores = {lr: np.mean([train(baseline(name, lr), s, data, args) for s in tune])
                  for lr in np.logspace(-3, 1, args.lrs)}
        best[name] = min(scores, key=scores.get)
    finals = {name: [train(baseline(name, best[name]), s, data, args) for s in test] for name in BASELINES}
    finals["learned"] = [train(lambda net: TorchOptimizer.from_checkpoint(args.checkpoint, net), s, data, args)
                         for s in test]

    blown = {name: sum(not np.isfinite(x) for x in f) for name, f in finals.items()}
    print(f"{args.dataset} ({info['source']}): {args.layers} x {args.hidden} {args.activation} MLP, {args.steps} steps,"
          f" minibatch {args.minibatch}; baselines tuned on {args.tune_seeds} seeds, {args.test_seeds} test seeds")
    for name, f in finals.items():
        lr = f"lr {best[name]:.3g}" if name in best else args.checkpoint
        blew = f", {blown[name]} of {len(f)} blew up" if blown[name] else ""
        print(f"  {name:<8} mean final loss {np.mean(f):.4f}  ({lr}){blew}")
    top = min(BASELINES, key=lambda n: np.mean(finals[n]))
    ratio, low, high = bootstrap_ratio(finals["learned"], finals[top])
    print(f"learned / best tuned ({top}): {ratio:.3f} [{low:.3f}, {high:.3f}]  ({time.perf_counter() - start:.0f} s)")
    return {"ratio": ratio, "low": low, "high": high, "best": top, "finals": finals}


if __name__ == "__main__":
    torch.set_num_threads(1)  # one thread, as the MLP steps are small; a caller's process keeps its own setting
    main()
