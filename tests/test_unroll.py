"""Unrolls compiled whole (`device.compile_unroll`) must meta-train exactly as the eager loop does."""

import pytest
import torch

from l2lcli import bptt
from l2lcli.config import build
from l2lcli.optimizers.cells import compile_unroll, fuse
from l2lcli.rollout import rollout
from tests.test_cifar import _batches, write_binary
from tests.test_data import idx_root  # noqa: F401  (fixture)
from tests.test_mnist import MNIST_TINY


def _meta_gradient(cfg, problems, meta_loss="sum", steps=6, unroll=3):
    """phi's meta-gradient summed over a trajectory's unrolls (SGD at lr 0 keeps phi), and each step's running mean
    loss."""
    torch.manual_seed(0)
    opt = build(cfg.optimizer)
    step_loss = []
    bptt.trajectory(problems, opt, torch.optim.SGD(opt.parameters(), lr=0.0), steps, unroll, meta_loss,
                    step_loss=step_loss)
    return torch.cat([p.grad.flatten() for p in opt.parameters()]), step_loss


@pytest.mark.parametrize("task", ["quadratic", "quadratic_paper", "mnist", "cifar"])
def test_the_traced_step_computes_what_the_eager_step_computes(make_cfg, idx_root, tmp_path, task):  # noqa: F811
    """torch.func's gradient at detached parameters and the loss of step_inputs give autograd's meta-loss, means and
    meta-gradient (run eagerly here; the compiled test below compiles the same code)."""
    # best recipes: the problem inputs' dict state; paper recipes: the plain LSTM's list of layer states
    overrides = {"quadratic": [], "quadratic_paper": ["recipe=paper"], "mnist": [*MNIST_TINY, f"data.root={idx_root}"],
                 "cifar": ["task=cifar", "recipe=paper", f"data.root={tmp_path}", "task.channels=2",
                           "task.fc_units=4", "task.minibatch=4"]}[task]
    if task == "cifar":
        write_binary(tmp_path, _batches())
    cfg = make_cfg(*overrides)
    torch.manual_seed(0)
    opt = build(cfg.optimizer)
    problems = build(cfg.task).sample("train", 2, 0)
    assert problems.traceable
    params = problems.init_params()
    _, _, grads = bptt.loss_and_grads(problems, params, 0)
    scales = torch.tensor([float("nan"), 2.0, float("nan")])
    out = {}
    for how in ("eager", "traced"):
        state = opt.init_state(params, problems.kinds)
        steps = [1, 2, 3] if how == "eager" else [problems.step_inputs(t) for t in (1, 2, 3)]
        fn = bptt.eager_loss_and_grads if how == "eager" else bptt.traced_loss_and_grads
        total, means, last, _, _ = bptt.unroll(problems, opt, params, state, grads, steps, scales, "relative",
                                               False, False, fn)
        out[how] = (total, means, last, torch.autograd.grad(total, list(opt.parameters())))
    (a, ma, pa, ga), (b, mb, pb, gb) = out["eager"], out["traced"]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ma, mb)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k])
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y)


@pytest.mark.slow  # compiling takes 15-40 s; `make smoke` meta-trains compiled unrolls by default in CI
@pytest.mark.parametrize("rule", [[], ["task.nominal=adam", "task.nominal_lr=0.1"]])  # ADAM's step count a tensor
def test_a_compiled_unroll_meta_trains_as_the_eager_loop(make_cfg, monkeypatch, rule):
    """One compiled graph per unroll (and per learned step in a rollout): the same meta-gradient, running means and
    loss curve as the eager code; a trajectory over `compile_unroll` coordinates stays eager."""
    cfg = make_cfg("task.dim=3", *rule)
    problems = build(cfg.task).sample("train", 4, 0)
    asked = []
    real = bptt.compiled
    monkeypatch.setattr(bptt, "compiled", lambda fn: asked.append(fn) or real(fn))
    if not fuse(True, unroll_max=12):
        pytest.skip("no C++ compiler for torch.compile")
    try:
        assert compile_unroll(12) and not compile_unroll(13)
        grad, step_loss = _meta_gradient(cfg, problems)
        assert asked == [bptt.unroll]
        torch.manual_seed(0)
        curve = rollout(problems, build(cfg.optimizer), 6).curve
        fuse(True, unroll_max=11)
        _meta_gradient(cfg, problems, steps=1, unroll=1)
        assert asked == [bptt.unroll]  # 12 coordinates: eager
    finally:
        fuse(False)
    ref_grad, ref_loss = _meta_gradient(cfg, problems)
    assert grad.abs().max() > 0
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)
    assert step_loss == pytest.approx(ref_loss, rel=1e-5)
    torch.manual_seed(0)
    torch.testing.assert_close(curve, rollout(problems, build(cfg.optimizer), 6).curve, rtol=1e-4, atol=1e-6)
