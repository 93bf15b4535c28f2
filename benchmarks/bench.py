"""l2l's speed in one run: meta-training throughput against a batched reference (all problems in one tensor, eager
nn.LSTMCell, the same meta-gradient), where the time goes, evaluation, sweeps, the learned optimizer's cost per warm
step relative to ADAM's, and how far each stands from compute bounds (the LSTM's matmuls at the measured matmul rate;
with its sigmoids and tanhs at the measured compiled-sigmoid rate).

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


def activations_per_second(repeats: int) -> float:
    """Sigmoids per second, compiled (the LSTM's gates: its elementwise work is mostly these)."""
    x = torch.randn(80, 16384)
    f = torch.compile(torch.sigmoid)
    return x.numel() / median_time(lambda: f(x), repeats)


def lstm_activations_per_coordinate(net) -> int:
    """Sigmoids and tanhs per coordinate and step: 4 gates and tanh(c) per hidden unit and layer."""
    return 5 * net.hidden * len(net.cells)


def where_time_goes(run) -> str:
    """Shares of one call of `run` (torch.profiler, self time): matrix products, compiled kernels, the rest."""
    with torch.profiler.profile() as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    kernels = sum(e.self_cpu_time_total for e in events if "CompiledFxGraph" in e.key)
    return (f"matmuls {100 * mm / total:.0f}%, compiled elementwise kernels {100 * kernels / total:.0f}%, "
            f"everything else (eager ops, Python, meta step) {100 * (total - mm - kernels) / total:.0f}%")


# --- the reference: how a careful reimplementation meta-trains (the authors' code runs its problems as one tensor) --
class RowMajorNet:
    """l2l's coordinatewise LSTM (the same weights) run the usual way: eager nn.LSTMCell, every coordinate of every
    problem one row of its batch."""

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
        assert not any(net.stateful for net in rule.nets.values()), "the reference takes the paper's inputs only"
        self.rule, self.nets = rule, {g: RowMajorNet(net) for g, net in rule.nets.items()}

    def assign(self, names, kinds=None):
        return self.rule.assign(names, kinds)

    def parameters(self):
        return self.rule.parameters()


def reference_trajectory(problems, optimizer, meta, T: int, unroll: int) -> None:
    """All problems at once, eager; the optimizee loss is evaluated twice per step: at detached parameters for the
    gradient (second derivatives dropped), through the graph for the meta-loss (the paper's sum over steps)."""
    params = problems.init_params()
    state, meta_loss = optimizer.init_state(params, problems.kinds), 0.0
    for t in range(T):
        leaves = {k: v.detach().requires_grad_() for k, v in params.items()}
        grads = torch.autograd.grad(problems.loss(leaves, t).sum(), list(leaves.values()))
        params, state = optimizer.step(params, dict(zip(leaves, grads, strict=True)), state)
        meta_loss = meta_loss + problems.loss(params, t + 1).mean()
        if (t + 1) % unroll == 0:
            meta.zero_grad()
            meta_loss.backward()
            meta.step()
            meta_loss = 0.0
            params, state = tree_detach(params), tree_detach(state)


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
    ref = gradient(lambda o, m: reference_trajectory(problems, RowMajorLSTM(o), m, T, T))
    return ((batched - ref).abs().max() / ref.abs().max()).item()


def meta_training(task_name: str, batches: tuple, repeats: int, rows: list, gflops: float, activations: float,
                  overrides: tuple = ()):
    """Optimizee steps per second of l2l's meta-training (compiled, then eager at the first batch size) and of the
    batched reference, at each number of problems per trajectory in `batches`."""
    torch._dynamo.reset()  # compile for this task's shapes first, as a fresh `l2l meta-train` would
    # the paper's setup: one LSTM for every parameter on MNIST (as earlier figures), one per kind on the conv net
    cfg = compose([f"task={task_name}", "recipe=paper", *overrides])
    task = build(cfg.task)
    torch.manual_seed(0)
    optimizer = build(cfg.optimizer)
    reference = RowMajorLSTM(optimizer)
    meta = torch.optim.Adam(optimizer.parameters(), lr=1e-4)
    T, U = cfg.task.steps, cfg.train.unroll
    rate = {}  # (who, problems per trajectory): optimizee steps/s
    for batch in batches:
        problems = task.sample("train", batch, 0)
        for who in ("l2l", "eager", "reference") if batch == batches[0] else ("l2l", "reference"):
            fuse(who == "l2l", unroll_max=cfg.device.compile_unroll)
            run = (lambda p=problems: l2l_trajectory(p, optimizer, meta, T, cfg.train)) if who != "reference" else \
                (lambda p=problems: reference_trajectory(p, reference, meta, T, U))
            rate[who, batch] = batch * T / median_time(run, repeats)
    resolve_device(cfg)  # the configured default (device.compile=true) from here on
    coords = sum(v[0].numel() for v in problems.init_params().values())
    net = next(iter(optimizer.nets.values()))
    # forward + backward of the LSTM ~ 3x its forward matrix work, per coordinate and step; its activations once
    matmul_s = 3 * lstm_flops_per_coordinate(net) * coords / (gflops * 1e9)
    bound = 1 / matmul_s  # LSTM matmuls only
    both = 1 / (matmul_s + lstm_activations_per_coordinate(net) * coords / activations)
    name = f"{task_name}: meta-training"
    for batch in batches:
        r, ref = rate["l2l", batch], rate["reference", batch]
        rows.append((f"{name}, l2l ({batch} problems/trajectory)", f"{r:,.0f} optimizee steps/s",
                     f"{100 * r / bound:.0f}% of LSTM matmul bound ({100 * r / both:.0f}% with its activations); "
                     f"{r / ref:.1f}x the batched reference"))
        rows.append((f"{name}, batched reference ({batch} problems/trajectory)", f"{ref:,.0f} optimizee steps/s",
                     f"{100 * ref / bound:.0f}% of LSTM matmul bound"))
    eager = rate["eager", batches[0]]
    rows.append((f"{name}, l2l with device.compile=false ({batches[0]} problems/trajectory)",
                 f"{eager:,.0f} optimizee steps/s", f"{eager / rate['reference', batches[0]]:.1f}x the reference"))
    problems = task.sample("train", batches[0], 0)
    rows.append((f"{name}, where l2l's time goes ({batches[0]} problems/trajectory)", "profile",
                 where_time_goes(lambda: l2l_trajectory(problems, optimizer, meta, T, cfg.train))))
    return cfg, task, optimizer


def cost_per_step(cfg, task, optimizer, problems_n: int, repeats: int, rows: list, steps: int | None = None):
    """Warm steps only (a rollout's first step, where compiling happens, is timed apart), loss and gradient
    included on both sides."""
    problems = task.sample("test", problems_n, 0)
    adam = build(baseline_config("adam"))
    steps = steps or cfg.task.steps
    t_lstm = statistics.median(rollout(problems, optimizer, steps).seconds for _ in range(repeats))
    t_adam = statistics.median(rollout(problems, adam, steps).seconds for _ in range(repeats))
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
    gflops, activations = matmul_gflops(args.repeats), activations_per_second(args.repeats)
    rows.append(("machine", f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads",
                 f"fp32 matmul {gflops:.0f} GFLOP/s; compiled sigmoid {activations / 1e9:.2f} G/s"))

    tasks = set(args.tasks.split(",")) - ({"mnist"} if args.skip_mnist else set())
    if "quadratic" in tasks:
        quadratic(args, rows, gflops, activations)
    if "mnist" in tasks:
        # 1 problem per trajectory is the MNIST default; 16 shows what batching problems adds (same meta-gradient
        # as the reference's, averaged over the problems: checked below with 2)
        cfg, task, optimizer = meta_training("mnist", (1, 16), args.repeats, rows, gflops, activations)
        diff = same_meta_gradient(cfg, task, 2, cfg.train.unroll)
        rows.append((f"mnist: l2l meta-gradient vs the reference's, 2 problems x {cfg.train.unroll} steps",
                     f"max rel. diff {diff:.1e}", "same results"))
        cost_per_step(cfg, task, optimizer, 1, args.repeats, rows)
        cost_per_step(cfg, task, optimizer, 64, args.repeats, rows, steps=10)  # a million coordinates
    if "cifar" in tasks:  # the conv net on Fashion-MNIST (CIFAR-10 cannot be installed here); 1 problem is its default
        cfg, task, optimizer = meta_training("cifar", (1, 4), args.repeats, rows, gflops, activations,
                                             ("task.dataset=fashion_mnist",))
        diff = same_meta_gradient(cfg, task, 2, cfg.train.unroll)
        rows.append((f"cifar: l2l meta-gradient vs the reference's, 2 problems x {cfg.train.unroll} steps",
                     f"max rel. diff {diff:.1e}", "same results"))
        cost_per_step(cfg, task, optimizer, 1, args.repeats, rows)

    if "art" in tasks:  # images 64x64 through the frozen VGG-19 (random weights); 4 problems is its default
        cfg, task, optimizer = meta_training("art", (4,), args.repeats, rows, gflops, activations)
        diff = same_meta_gradient(cfg, task, 2, 8)
        rows.append(("art: l2l meta-gradient vs the reference's, 2 problems x 8 steps", f"max rel. diff {diff:.1e}",
                     "same results"))
        cost_per_step(cfg, task, optimizer, 4, args.repeats, rows)

    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'figure':<34}  note")
    for name, figure, note in rows:
        print(f"{name:<{width}}  {figure:<34}  {note}")


def quadratic(args, rows: list, gflops: float, activations: float) -> None:
    cfg, task, optimizer = meta_training("quadratic", (128,), args.repeats, rows, gflops, activations)
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
