"""l2l's speed in one run: meta-training throughput against a straightforward reference, evaluation, sweeps,
the learned optimizer's cost per step relative to ADAM, and how far each stands from a rough compute bound.

    python benchmarks/bench.py [--repeats 3] [--skip-mnist]

Prints a table; medians over --repeats. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from omegaconf import OmegaConf

from l2lcli.bptt import trajectory, tree_detach
from l2lcli.commands.sweep import lr_grid, sweep_baseline
from l2lcli.config import baseline_config, build, compose
from l2lcli.device import resolve_device
from l2lcli.optimizers.cells import fuse
from l2lcli.optimizers.learned import LearnedOptimizer
from l2lcli.optimizers.preprocess import preprocess
from l2lcli.rollout import rollout


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_gflops(repeats: int) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / median_time(lambda: [a @ b for _ in range(10)], repeats) * 10 / 1e9


def lstm_flops_per_coordinate(net) -> float:
    """Multiply-adds x2 of the coordinatewise LSTM's matrix work, forward only."""
    return sum(2 * p.numel() for n, p in net.named_parameters() if "weight" in n)


# --- the reference: how typical reimplementations meta-train, one optimizee at a time -------------------------
class RowMajorNet:
    """l2l's coordinatewise LSTM (the same weights) run as typical reimplementations do: eager nn.LSTMCell with one
    coordinate per row."""

    def __init__(self, net):
        self.net = net

    def init_state(self, N, n, device, dtype):
        return [tuple(torch.zeros(N * n, self.net.hidden, device=device, dtype=dtype) for _ in "hc")
                for _ in self.net.cells]

    def __call__(self, g, state):
        x, new_state = preprocess(g.reshape(-1), self.net.kind, self.net.p), []
        for cell, (h, c) in zip(self.net.cells, state, strict=True):
            h, c = cell(x, (h, c))
            new_state.append((h, c))
            x = h
        return self.net.out(x).view(g.shape) * self.net.scale, new_state


class RowMajorLSTM:
    """The reference's optimizer: l2l's own grouping and update code (LearnedOptimizer) around RowMajorNet, sharing
    l2l's weights, so both train the same network."""

    init_state, updates, step = LearnedOptimizer.init_state, LearnedOptimizer.updates, LearnedOptimizer.step

    def __init__(self, rule):
        assert not any(net.gac for net in rule.nets.values()), "the reference is the plain LSTM"
        self.rule, self.nets = rule, {g: RowMajorNet(net) for g, net in rule.nets.items()}

    def assign(self, names, kinds=None):
        return self.rule.assign(names, kinds)

    def parameters(self):
        return self.rule.parameters()


def naive_trajectory(problems, optimizer, meta, T: int, unroll: int, which=None) -> None:
    """Per problem, per step, in Python; the optimizee loss is evaluated twice per step (meta-loss and gradient)."""
    for b in which if which is not None else range(problems.batch):
        single = {k: v[b : b + 1] for k, v in problems.init_params().items()}
        params, state, meta_loss = single, optimizer.init_state(single, problems.kinds), 0.0
        for t in range(T):
            leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
            grads = torch.autograd.grad(_one(problems, leaves, t, b).sum(), list(leaves.values()))
            params, state = optimizer.step(params, dict(zip(leaves, grads, strict=True)), state)
            meta_loss = meta_loss + _one(problems, params, t + 1, b).sum()
            if (t + 1) % unroll == 0:
                meta.zero_grad()
                meta_loss.backward()
                meta.step()
                meta_loss = 0.0
                params, state = tree_detach(params), tree_detach(state)


def _one(problems, params, t, b):
    """Problem b's loss alone (the batched task code, sliced to one problem)."""
    sliced = type(problems).__new__(type(problems))
    sliced.__dict__.update(problems.__dict__)
    sliced.batch = 1
    for name in ("W", "y", "theta0", "content"):
        if hasattr(problems, name):
            setattr(sliced, name, getattr(problems, name)[b : b + 1])
    if hasattr(problems, "targets"):  # art: the batch's targets, the content one sliced to this image
        targets = problems._targets()
        sliced.targets = {**targets, "content": targets["content"][b : b + 1]}
    if hasattr(problems, "indices"):
        idx = problems.indices(t)[b : b + 1]
        sliced.indices = lambda _t, idx=idx: idx
        sliced._cached = (None, None)
    return sliced.loss(params, t)


def l2l_trajectory(problems, optimizer, meta, T: int, tc) -> None:
    """One meta-training trajectory as `l2l meta-train` runs it, with the train config `tc`."""
    trajectory(problems, optimizer, meta, T, tc.unroll, tc.meta_loss, tc.second_derivatives, tc.grad_clip)


def same_meta_gradient(cfg, task, problems_n: int, T: int) -> float:
    """Max relative difference between l2l's batched meta-gradient and the reference's, over T steps (one unroll)."""
    tc = OmegaConf.merge(cfg.train, {"grad_clip": None, "unroll": T})

    def gradient(run):
        torch.manual_seed(0)
        optimizer = build(cfg.optimizer)
        meta = torch.optim.SGD(optimizer.parameters(), lr=0.0)  # lr 0: the weights stay, the gradient is kept
        run(optimizer, meta)
        return torch.cat([p.grad.flatten() for p in optimizer.parameters()])

    problems = task.sample("train", problems_n, 0)
    batched = gradient(lambda o, m: l2l_trajectory(problems, o, m, T, tc))
    ref = sum(gradient(lambda o, m, b=b: naive_trajectory(problems, RowMajorLSTM(o), m, T, T, [b]))
              for b in range(problems_n)) / problems_n
    return ((batched - ref).abs().max() / ref.abs().max()).item()


def meta_training(task_name: str, batches: tuple, naive_batch: int, repeats: int, rows: list, gflops: float,
                  overrides: tuple = ()):
    """Optimizee steps per second of l2l's meta-training (compiled cells, then eager; at each number of problems per
    trajectory in `batches`) and of the reference, which takes problems one at a time."""
    torch._dynamo.reset()  # compile for this task's shapes first, as a fresh `l2l meta-train` would
    # the paper's setup: one LSTM for every parameter on MNIST (as earlier figures), one per kind on the conv net
    cfg = compose([f"task={task_name}", "recipe=paper", *overrides])
    task = build(cfg.task)
    torch.manual_seed(0)
    optimizer = build(cfg.optimizer)
    meta = torch.optim.Adam(optimizer.parameters(), lr=1e-4)
    T, U = cfg.task.steps, cfg.train.unroll
    rates = {}  # (problems per trajectory, compiled): optimizee steps/s; eager only at the first batch size
    for batch, compiled in [(b, True) for b in batches] + [(batches[0], False)]:
        fuse(compiled)
        problems = task.sample("train", batch, 0)
        seconds = median_time(lambda p=problems: l2l_trajectory(p, optimizer, meta, T, cfg.train), repeats)
        rates[batch, compiled] = batch * T / seconds
    resolve_device(cfg)  # the configured default (device.compile=true) from here on
    small = task.sample("train", naive_batch, 0)
    reference = RowMajorLSTM(optimizer)
    naive_rate = naive_batch * T / median_time(lambda: naive_trajectory(small, reference, meta, T, U), repeats)
    coords = sum(v[0].numel() for v in small.init_params().values())
    # forward + backward of the LSTM ~ 3x its forward matrix work, per coordinate and step
    bound = gflops * 1e9 / (3 * lstm_flops_per_coordinate(next(iter(optimizer.nets.values()))) * coords)  # LSTM only
    name = f"{task_name}: meta-training"
    for batch in batches:
        rate = rates[batch, True]
        rows.append((f"{name}, l2l ({batch} problems/trajectory)", f"{rate:,.0f} optimizee steps/s",
                     f"{100 * rate / bound:.0f}% of LSTM matmul bound; {rate / naive_rate:.1f}x the reference"))
    eager = rates[batches[0], False]
    rows.append((f"{name}, l2l with device.compile=false ({batches[0]} problems/trajectory)",
                 f"{eager:,.0f} optimizee steps/s", f"{eager / naive_rate:.1f}x the reference"))
    rows.append((f"{name}, per-problem reference ({naive_batch} problems)", f"{naive_rate:,.0f} optimizee steps/s",
                 f"{100 * naive_rate / bound:.0f}% of LSTM matmul bound"))
    return cfg, task, optimizer


def cost_per_step(cfg, task, optimizer, problems_n: int, repeats: int, rows: list):
    problems = task.sample("test", problems_n, 0)
    adam = build(baseline_config("adam"))
    t_lstm = statistics.median(rollout(problems, optimizer, cfg.task.steps)[1] for _ in range(repeats))
    t_adam = statistics.median(rollout(problems, adam, cfg.task.steps)[1] for _ in range(repeats))
    rows.append((f"{cfg.task.name}: learned optimizer step vs ADAM step ({problems_n} problems)",
                 f"{1e3 * t_lstm:.2f} ms vs {1e3 * t_adam:.2f} ms", f"{t_lstm / t_adam:.1f}x ADAM's cost"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-mnist", action="store_true")
    parser.add_argument("--tasks", default="quadratic,mnist",
                        help="comma-separated: quadratic, mnist, cifar (needs Fashion-MNIST: dataset-fashion-mnist), "
                             "art")
    args = parser.parse_args()
    rows = []
    resolve_device(compose([]))  # the process settings every l2l command uses (threads, allocator), for both sides
    gflops = matmul_gflops(args.repeats)
    rows.append(("machine", f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
                 f"fp32 matmul {gflops:.0f} GFLOP/s"))

    tasks = set(args.tasks.split(",")) - ({"mnist"} if args.skip_mnist else set())
    if "quadratic" in tasks:
        quadratic(args, rows, gflops)
    if "mnist" in tasks:
        # 1 problem per trajectory is the MNIST default; 16 shows what batching problems adds (same meta-gradient
        # as the reference's, averaged over the problems: checked below with 2)
        cfg, task, optimizer = meta_training("mnist", (1, 16), 1, args.repeats, rows, gflops)
        diff = same_meta_gradient(cfg, task, 2, cfg.train.unroll)
        rows.append((f"mnist: l2l meta-gradient vs the reference's, 2 problems x {cfg.train.unroll} steps",
                     f"max rel. diff {diff:.1e}", "same results"))
        cost_per_step(cfg, task, optimizer, 1, args.repeats, rows)
    if "cifar" in tasks:  # the conv net on Fashion-MNIST (CIFAR-10 cannot be installed here); 1 problem is its default
        cfg, task, optimizer = meta_training("cifar", (1, 4), 1, args.repeats, rows, gflops,
                                             ("task.dataset=fashion_mnist",))
        diff = same_meta_gradient(cfg, task, 2, cfg.train.unroll)
        rows.append((f"cifar: l2l meta-gradient vs the reference's, 2 problems x {cfg.train.unroll} steps",
                     f"max rel. diff {diff:.1e}", "same results"))
        cost_per_step(cfg, task, optimizer, 1, args.repeats, rows)

    if "art" in tasks:  # images 64x64 through the frozen VGG-19 (random weights); 4 problems is its default
        cfg, task, optimizer = meta_training("art", (4,), 1, args.repeats, rows, gflops)
        diff = same_meta_gradient(cfg, task, 2, 8)
        rows.append(("art: l2l meta-gradient vs the reference's, 2 problems x 8 steps", f"max rel. diff {diff:.1e}",
                     "same results"))
        cost_per_step(cfg, task, optimizer, 4, args.repeats, rows)

    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'figure':<34}  note")
    for name, figure, note in rows:
        print(f"{name:<{width}}  {figure:<34}  {note}")


def quadratic(args, rows: list, gflops: float) -> None:
    cfg, task, optimizer = meta_training("quadratic", (128,), 4, args.repeats, rows, gflops)
    diff = same_meta_gradient(cfg, task, 3, cfg.task.steps)
    rows.append(("quadratic: l2l meta-gradient vs the reference's, 3 problems x 100 steps",
                 f"max rel. diff {diff:.1e}", "same results"))
    problems = task.sample("test", 256, 0)
    t_eval = median_time(lambda: rollout(problems, optimizer, 100), args.repeats)
    eval_bound = lstm_flops_per_coordinate(next(iter(optimizer.nets.values()))) * 10 * 256 * 100 / (gflops * 1e9)
    rows.append(("quadratic: evaluate learned optimizer, 256 problems x 100 steps", f"{t_eval:.2f} s",
                 f"{100 * eval_bound / t_eval:.0f}% of LSTM matmul bound (forward only)"))
    sweep_cfg = compose([])
    lrs = lr_grid(sweep_cfg)
    t_sweep = median_time(lambda: [sweep_baseline(n, lrs, problems, 100) for n in sweep_cfg.sweep.optimizers],
                          args.repeats)
    rows.append((f"quadratic: sweep 4 baselines x {len(lrs)} lrs x 256 problems x 100 steps", f"{t_sweep:.2f} s",
                 f"{4 * len(lrs) * 256 * 100 / t_sweep:,.0f} optimizee steps/s; "
                 # the quadratic's loss and gradient: two 10x10 matrix-vector products, 4 d^2 flops
                 f"{100 * 4 * len(lrs) * 256 * 100 * 4 * 10**2 / (gflops * 1e9) / t_sweep:.0f}% of matmul bound"))
    cost_per_step(cfg, task, optimizer, 256, args.repeats, rows)


if __name__ == "__main__":
    main()
