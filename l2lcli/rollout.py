"""Run an optimizer on a batch of problems, without meta-gradients: the loss curve of every problem."""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import torch

from .optimizers.cells import compiled
from .tasks.base import ProblemBatch, replicate


def loss_and_grads(problems: ProblemBatch, params: dict, t: int, retain_graph: bool = False,
                   create_graph: bool = False):
    """One loss evaluation per step, reused for the curve (or meta-loss) and the optimizee gradient.

    Gradients are taken with respect to the current parameters only and come back detached: the paper drops
    the second derivatives of f (d grad / d phi = 0); `create_graph` keeps them.
    """
    leaves = {k: v if v.requires_grad else v.detach().requires_grad_() for k, v in params.items()}
    loss = problems.loss(leaves, t)
    grads = torch.autograd.grad(loss.sum(), list(leaves.values()), retain_graph=retain_graph or create_graph,
                                create_graph=create_graph)
    return leaves, loss, dict(zip(leaves, grads, strict=True))


class Rollout(NamedTuple):
    curve: torch.Tensor   # losses [steps + 1, N] of theta_0 .. theta_steps (N = replicas * B)
    seconds: float        # per warm step: every step after the first
    params: dict          # theta_steps, detached
    first_seconds: float  # the first step, with what it compiles or allocates once


def rollout(problems: ProblemBatch, optimizer, steps: int, replicas: int = 1) -> Rollout:
    """Run `optimizer` for `steps` steps on `replicas` copies of every problem."""
    params = replicate(problems.init_params(), replicas)
    state = optimizer.init_state(params, problems.kinds)
    # a learned step is dozens of small operations: compiled whole (with compiled kernels on), one fused call
    whole = compiled(type(optimizer).step, dynamic=None) if getattr(optimizer, "compiles_whole", False) else None
    step = (lambda *a: whole(optimizer, *a)) if whole else optimizer.step
    curve = []
    sync = torch.cuda.synchronize if params[next(iter(params))].device.type == "cuda" else lambda: None
    times = [time.perf_counter()]
    for t in range(steps + 1):
        with torch.enable_grad():
            _, loss, grads = loss_and_grads(problems, params, t)
        curve.append(loss.detach())
        if t == steps:
            break
        with torch.no_grad():
            params, state = step({k: v.detach() for k, v in params.items()}, grads, state)
        if t == 0:  # the one host synchronisation: compiling and first allocations are timed apart
            sync()
            times.append(time.perf_counter())
    sync()
    times.append(time.perf_counter())
    first = times[1] - times[0] if len(times) == 3 else math.nan
    seconds = (times[-1] - times[-2]) / (steps - 1) if steps > 1 else (times[-1] - times[0]) / max(steps, 1)
    return Rollout(torch.stack(curve), seconds, {k: v.detach() for k, v in params.items()}, first)
