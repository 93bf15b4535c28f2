"""Meta-gradients by truncated backpropagation through time: one trajectory, its meta-loss, a guarded meta step."""

from __future__ import annotations

import math

import torch

from .distributed import SOLO, World
from .optimizers.cells import compile_unroll, compiled
from .rollout import loss_and_grads, rollout
from .tasks.base import problem_rng

META_LOSSES = ("sum", "final", "log_sum", "relative")
MEMBERS = 2**64 - 1  # the validation stream's index that picks a family's members; batches count from 0


def tree_detach(x):
    """Detach every tensor in a nested dict / list / tuple (truncated BPTT cuts the graph here)."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, dict):
        return {k: tree_detach(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(tree_detach(v) for v in x)
    return x


def meta_loss_term(loss: torch.Tensor, kind: str, scale: torch.Tensor | float = 1.0, last: bool = False):
    """This step's share of the meta-loss L(phi) = sum_t w_t f(theta_t), averaged over the problems.

    `relative` weights step t by 1 / (running mean loss at step t), `scale`: every step's relative progress counts
    alike, as in log_sum, but the loss stays linear, so one near-zero minibatch loss cannot dominate the way its
    log does (and the meta-objective stays the mean loss that evaluation reports). `final` counts the `last` step.
    """
    if kind == "sum":
        return loss.mean()
    if kind == "relative":
        return loss.mean() / scale
    if kind == "final":
        return loss.mean() if last else loss.new_zeros(())
    return loss.clamp_min(1e-30).log().mean()  # log_sum


def final_losses(batches, optimizer, steps: int) -> list[float]:
    """Mean final loss of the frozen optimizer on each batch of problems."""
    optimizer.eval()
    finals = [rollout(problems, optimizer, steps).curve[-1].mean().item() for problems in batches]
    optimizer.train()
    return finals


def score(finals: list[float]) -> float:
    """Validation's one number: a batch's mean final loss, or the geometric mean of several batches' (members of
    a task family, whose losses differ in scale); inf if any diverged."""
    if not all(map(math.isfinite, finals)):
        return math.inf
    return finals[0] if len(finals) == 1 else math.exp(sum(math.log(max(f, 1e-30)) for f in finals) / len(finals))


def validate(batches: list, optimizer, steps: int) -> float:
    """The validation score (see `score`) of the frozen optimizer on a list of problem batches."""
    return score(final_losses(batches, optimizer, steps))


def validation_set(task, train_cfg, seed: int, device="cpu") -> list:
    """Meta-training's validation problems: `validation_batches` batches of `validation_problems`, each drawn
    from its own member where the task is a family: members spread over every value of every key
    (`validation_members=spread`), or each drawn at random (`random`, as runs saved before the key had)."""
    n = train_cfg.get("validation_batches", 1)  # runs saved before the key: one batch
    if train_cfg.get("validation_members", "random") == "spread":
        members = task.spread(n, problem_rng("validation", seed, index=MEMBERS))
    else:
        members = [True] * n
    return [task.sample("validation", train_cfg.validation_problems, seed, index=i, device=device, member=m)
            for i, m in enumerate(members)]


def traced_loss_and_grads(problems, params: dict, inputs: tuple, second_derivatives: bool = False):
    """loss_and_grads as torch.compile can trace it: the loss of one step's `inputs` through the graph (for the
    meta-loss), and the gradient by torch.func at detached parameters (the paper's d grad / d phi = 0)."""
    at = params if second_derivatives else {k: v.detach() for k, v in params.items()}
    grads = torch.func.grad(lambda p: problems.loss_with(p, inputs).sum())(at)
    return params, problems.loss_with(params, inputs), grads


def eager_loss_and_grads(problems, params: dict, t: int, second_derivatives: bool = False):
    return loss_and_grads(problems, params, t, retain_graph=True, create_graph=second_derivatives)


class Imitation:
    """Regression of the rule's updates on a hand-designed optimizer's (`teacher`), added to the meta-loss early
    in meta-training (Chen et al. 2020): the teacher follows the rule's own trajectory, seeing the same gradients,
    and each step adds `weight` x the squared error of the rule's update relative to the teacher's (per problem,
    over all its coordinates, averaged over problems), a term blind to the scale of the updates."""

    def __init__(self, teacher, weight: float):
        self.teacher, self.weight, self.state = teacher, weight, None

    def start(self, params: dict, kinds=None) -> None:
        self.state = self.teacher.init_state(params, kinds)

    def term(self, params: dict, new: dict, grads: dict) -> torch.Tensor:
        """This step's share; advances the teacher's state (`params` before the rule's step, `new` after it)."""
        at = {k: p.detach() for k, p in params.items()}
        target, self.state = self.teacher.step(at, grads, self.state)
        err = sum(((new[k] - params[k]) - (target[k] - at[k])).flatten(1).square().sum(1) for k in params)
        size = sum((target[k] - at[k]).flatten(1).square().sum(1) for k in params)
        return self.weight * (err / size.clamp_min(1e-30)).mean()


def unroll(problems, optimizer, params, state, grads, steps: list, scales: torch.Tensor, kind: str, ends: bool,
           second_derivatives: bool, step_fn=eager_loss_and_grads, imitation: Imitation | None = None):
    """One truncation: an optimizee step for each of `steps` (what `step_fn` needs: t, or a traced step's inputs).

    Returns the meta-loss, each step's mean loss [n] (detached), and the parameters, state and gradients after.
    `scales` are the running mean losses that `relative` divides by (NaN: not known yet, the step's own loss);
    `ends`: the last step is the trajectory's. A function of tensors, so torch.compile can take it whole, forward
    and backward: one graph instead of hundreds of small operations per step (not with an `imitation`, which
    keeps its teacher's state in Python).
    """
    total, means = 0.0, []
    for i, step in enumerate(steps):
        new, state = optimizer.step(params, grads, state)
        if imitation is not None:
            total = total + imitation.term(params, new, grads)
        params = new
        params, loss, grads = step_fn(problems, params, step, second_derivatives)
        mean = loss.detach().mean()
        scale = torch.where(scales[i].isnan(), torch.where(mean.isfinite(), mean, torch.ones_like(mean)), scales[i])
        total = total + meta_loss_term(loss, kind, scale=scale.clamp_min(1e-12), last=ends and i == len(steps) - 1)
        means.append(mean)
    return total, torch.stack(means), params, state, grads


def trajectory(problems, optimizer, meta, steps: int, unroll_steps: int, meta_loss: str = "sum",
               second_derivatives: bool = False, grad_clip: float | None = None,
               step_loss: list | None = None, world: World = SOLO,
               imitation: Imitation | None = None) -> tuple[float, bool]:
    """One trajectory on a fresh problem batch: `steps` optimizee steps cut into unrolls, a meta step after each.

    Returns the trajectory's mean loss, and False if a meta step was not finite (nothing was changed then, and the
    rest of the trajectory, whose optimizee has blown up, is dropped). `step_loss` holds the running mean loss at
    each step for `meta_loss=relative`; it is updated in place (an exponential average over trajectories). With
    other processes (`world`), each meta-gradient is averaged over them before the step. A small trajectory of a
    task whose loss is traceable runs each unroll as one compiled graph (`device.compile_unroll`), unless it is
    a member of a task family or it imitates a hand-designed optimizer (`imitation`, see Imitation).
    """
    step_loss = step_loss if step_loss is not None else []
    params = problems.init_params()
    state = optimizer.init_state(params, problems.kinds)
    params, loss, grads = loss_and_grads(problems, params, 0)
    params = tree_detach(params)  # as after every unroll: one compiled graph serves all
    coordinates = sum(v.numel() for v in params.values())
    # not for a family's members: each new shape would compile its own graph, minutes apiece
    traced = (problems.traceable and getattr(optimizer, "compiles_whole", False) and not second_derivatives
              and world.size == 1 and not problems.member and imitation is None and compile_unroll(coordinates))
    if imitation is not None:
        imitation.start(params, problems.kinds)
    # compiled: each step's minibatch as tensors (step_inputs), the gradient by torch.func; eager: t, autograd
    run, step_fn = (compiled(unroll), traced_loss_and_grads) if traced else (unroll, eager_loss_and_grads)
    mean_loss = 0.0
    for t0 in range(0, steps, unroll_steps):
        ts = range(t0 + 1, min(t0 + unroll_steps, steps) + 1)
        scales = torch.tensor([step_loss[t - 1] if t <= len(step_loss) else math.nan for t in ts], device=loss.device)
        ends = meta_loss == "final" and ts[-1] == steps  # only `final` needs it: one compiled graph for the others
        inputs = [problems.step_inputs(t) for t in ts] if traced else list(ts)
        total, means, params, state, grads = run(problems, optimizer, params, state, grads, inputs, scales, meta_loss,
                                                 ends, second_derivatives, step_fn, imitation)
        for t, mean in zip(ts, world.mean(means), strict=True):  # the whole batch's, over every rank
            if len(step_loss) < t:  # the first trajectory starts each step's running mean at its own loss
                step_loss.append(mean if math.isfinite(mean) else 1.0)
            elif math.isfinite(mean):
                step_loss[t - 1] = 0.9 * step_loss[t - 1] + 0.1 * mean
            mean_loss += mean / steps
        if meta_loss == "final" and ts[-1] != steps and imitation is None:
            total = 0.0  # nothing to learn from this unroll (its steps have zero weight)
        if not meta_step(optimizer, meta, total, grad_clip, world):
            return mean_loss, False
        params, state, grads = tree_detach(params), tree_detach(state), tree_detach(grads)
    return mean_loss, True


def meta_step(optimizer, meta, meta_loss, clip, world: World = SOLO) -> bool:
    """One ADAM step on phi; refused (and nothing changed) if the loss, gradient or new weights are not finite."""
    meta.zero_grad(set_to_none=True)
    if not torch.is_tensor(meta_loss) or not meta_loss.requires_grad:
        return True  # an unroll with zero weight in the meta-loss (meta_loss=final before step T): nothing to learn
    finite = bool(torch.isfinite(meta_loss))
    if not finite and world.size == 1:
        return False
    meta_loss.backward()  # with other ranks, also when not finite: they all take part in the same all-reduce
    params = [p for p in optimizer.parameters() if p.grad is not None]
    if not finite:
        for p in params:
            p.grad.fill_(math.nan)  # so that every rank refuses this step
    world.average_gradients(params)
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip else math.inf)
    if not torch.isfinite(norm):
        meta.zero_grad(set_to_none=True)
        return False
    backup = {k: v.clone() for k, v in optimizer.state_dict().items()}
    meta_state = {k: {n: (x.clone() if torch.is_tensor(x) else x) for n, x in v.items()}
                  for k, v in meta.state.items()}
    meta.step()
    if all(torch.isfinite(p).all() for p in optimizer.parameters()):
        return True
    optimizer.load_state_dict(backup)  # roll back: a NaN weight must never reach a checkpoint
    for k, v in meta_state.items():
        meta.state[k] = v
    return False
