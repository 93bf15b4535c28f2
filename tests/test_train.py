import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from l2lcli import bptt
from l2lcli.commands import train
from l2lcli.config import build, check
from l2lcli.errors import L2LError
from l2lcli.rollout import loss_and_grads, rollout
from l2lcli.runs import load_checkpoint
from tests.conftest import TIMES


def test_meta_training_writes_its_run_and_beats_the_untrained_optimizer(make_cfg):
    cfg = make_cfg("train.epoch_trajectories=15", "train.max_epochs=2", "train.meta_lr=0.01")
    r = train.run(cfg)
    run = __import__("pathlib").Path(r["run_dir"])
    for f in ("config.yaml", "best.pt", "last.pt", "train_log.csv", "summary.json"):
        assert (run / f).is_file(), f
    log = pd.read_csv(run / "train_log.csv")
    assert list(log.columns) == ["epoch", "trajectories", "meta_loss", "val_loss", "best_val_loss", "meta_lr",
                                 "bad_steps", *TIMES]
    assert len(log) == 2 and log["trajectories"].iloc[-1] == 30
    # the untrained optimizer (same seed, same init) on the same validation problems
    torch.manual_seed(cfg.seed)
    untrained = build(cfg.optimizer)
    val = build(cfg.task).sample("validation", cfg.train.validation_problems, cfg.seed)
    before = rollout(val, untrained, cfg.task.steps)[0][-1].mean().item()
    assert r["best_val_loss"] < 0.7 * before
    ckpt = load_checkpoint(run)
    assert ckpt["task"] == "quadratic" and ckpt["config"].train.unroll == cfg.train.unroll


def test_same_seed_same_numbers(make_cfg):
    a = pd.read_csv(train.run(make_cfg())["run_dir"] + "/train_log.csv")
    b = pd.read_csv(train.run(make_cfg())["run_dir"] + "/train_log.csv")
    pd.testing.assert_frame_equal(a.drop(columns=TIMES), b.drop(columns=TIMES))
    c = pd.read_csv(train.run(make_cfg("seed=1"))["run_dir"] + "/train_log.csv")
    assert not a["val_loss"].equals(c["val_loss"])


def test_early_stopping_stops_after_patience(make_cfg):
    r = train.run(make_cfg("train.max_epochs=50", "train.patience=2", "train.min_improvement=0.99",
                           "train.epoch_trajectories=1"))
    assert r["stop_reason"] == "early_stopping" and r["epochs"] == 3 and r["best_epoch"] == 1


def test_second_derivatives_change_the_meta_gradient(make_cfg):
    """With the paper's default the optimizee gradient is a constant input; the option differentiates through it."""
    cfg = make_cfg()
    task = build(cfg.task)
    grads = {}
    for second in (False, True):
        torch.manual_seed(0)
        opt = build(cfg.optimizer)
        problems = task.sample("train", 4, 0)
        params = problems.init_params()
        state = opt.init_state(params)
        params, loss, g = loss_and_grads(problems, params, 0)
        total = 0
        for t in range(1, 4):
            params, state = opt.step(params, g, state)
            params, loss, g = loss_and_grads(problems, params, t, retain_graph=True, create_graph=second)
            total = total + loss.mean()
        total.backward()
        grads[second] = torch.cat([p.grad.flatten() for p in opt.parameters()])
    assert not torch.allclose(grads[False], grads[True])


def _unroll_losses(cfg, kind, monkeypatch):
    """The meta-loss handed to each meta step of one trajectory (T = 20, unrolls of 5), with weights that stay put,
    and the loss curve of the same optimizer on the same problems."""
    seen = []

    def record(optimizer, meta, meta_loss, clip, world=None):
        seen.append(meta_loss)
        return True  # no update: every unroll sees the same weights as the reference rollout

    monkeypatch.setattr(bptt, "meta_step", record)
    torch.manual_seed(0)
    opt = build(cfg.optimizer)
    problems = build(cfg.task).sample("train", 4, 0)
    bptt.trajectory(problems, opt, None, 20, 5, kind)
    curve = rollout(problems, opt, 20)[0].mean(1)  # [21]: theta_0 .. theta_20
    return seen, curve


def test_sum_meta_loss_is_the_sum_of_each_unrolls_step_losses(make_cfg, monkeypatch):
    seen, curve = _unroll_losses(make_cfg(), "sum", monkeypatch)
    assert len(seen) == 4 and all(m.requires_grad for m in seen)
    for u, m in enumerate(seen):  # steps 5u+1 .. 5u+5 (theta_0 never counts: no update has shaped it)
        assert m.item() == pytest.approx(curve[5 * u + 1 : 5 * u + 6].sum().item(), rel=1e-5)


def test_final_meta_loss_has_no_gradient_before_the_last_step(make_cfg, monkeypatch):
    seen, curve = _unroll_losses(make_cfg(), "final", monkeypatch)
    assert len(seen) == 4
    for m in seen[:3]:
        assert not (torch.is_tensor(m) and m.requires_grad) and float(m) == 0.0
    assert seen[3].requires_grad and seen[3].item() == pytest.approx(curve[20].item(), rel=1e-5)


def test_log_sum_and_relative_meta_losses_have_their_values(make_cfg, monkeypatch):
    seen, _ = _unroll_losses(make_cfg(), "log_sum", monkeypatch)
    torch.manual_seed(0)
    problems = build(make_cfg().task).sample("train", 4, 0)
    per_problem = rollout(problems, build(make_cfg().optimizer), 20)[0]  # [21, 4]
    for u, m in enumerate(seen):  # the mean over problems of log f, summed over the unroll's steps
        assert m.item() == pytest.approx(per_problem[5 * u + 1 : 5 * u + 6].log().mean(1).sum().item(), rel=1e-5)
    # the first trajectory starts each step's running mean at its own loss: every step weighs exactly 1
    seen, _ = _unroll_losses(make_cfg(), "relative", monkeypatch)
    assert [m.item() for m in seen] == pytest.approx([5.0] * 4) and all(m.requires_grad for m in seen)


def test_every_meta_loss_trains(make_cfg):
    for kind in ("sum", "final", "log_sum", "relative"):
        r = train.run(make_cfg(f"train.meta_loss={kind}"))
        assert r["bad_steps"] == 0 and r["best_val_loss"] < float("inf")


def test_relative_meta_loss_weights_each_step_by_its_running_mean(make_cfg):
    cfg = make_cfg("train.meta_loss=relative")
    loss = torch.tensor([2.0, 4.0])
    assert bptt.meta_loss_term(loss, "relative", scale=6.0).item() == pytest.approx(0.5)
    task, opt = build(cfg.task), build(cfg.optimizer)
    meta = torch.optim.Adam(opt.parameters(), lr=1e-3)
    step_loss = []
    T, U = cfg.task.steps, cfg.train.unroll
    bptt.trajectory(task.sample("train", 4, 0), opt, meta, T, U, "relative", step_loss=step_loss)
    first = list(step_loss)
    assert len(first) == cfg.task.steps and all(v > 0 for v in first)
    bptt.trajectory(task.sample("train", 4, 0, index=1), opt, meta, T, U, "relative", step_loss=step_loss)
    assert step_loss != first  # an exponential average over trajectories, updated in place


def test_a_fine_tuned_run_resumes_without_the_run_it_started_from(make_cfg):
    import shutil

    first = train.run(make_cfg())["run_dir"]
    second = train.run(make_cfg(f"train.init_from={first}", "train.max_epochs=1"))["run_dir"]
    shutil.rmtree(first)
    r = train.run(make_cfg(f"train.resume={second}", "train.max_epochs=1"))
    assert r["run_dir"] == second and r["epochs"] == 1


def test_a_finished_run_resumed_with_a_longer_budget_equals_one_run_with_that_budget(make_cfg):
    short = train.run(make_cfg("train.max_epochs=1"))
    longer = train.run(make_cfg(f"train.resume={short['run_dir']}", "train.max_epochs=3"))
    straight = train.run(make_cfg("train.max_epochs=3"))
    assert longer["run_dir"] == short["run_dir"] and longer["epochs"] == straight["epochs"] == 3
    a, b = (pd.read_csv(f"{r['run_dir']}/train_log.csv").drop(columns=TIMES) for r in (straight, longer))
    pd.testing.assert_frame_equal(a, b)
    wa, wb = (load_checkpoint(f"{r['run_dir']}/last.pt") for r in (straight, longer))
    assert all(torch.equal(wa["weights"][k], wb["weights"][k]) for k in wa["weights"])
    assert wb["config"].train.max_epochs == 3
    assert "max_epochs: 3" in (Path(longer["run_dir"]) / "config.yaml").read_text()


def test_a_run_saved_before_the_nominal_gate_is_refused_resume_with_the_fix(make_cfg):
    """An older run's meta-optimizer state lacks the gate's weights: one line that says to use --init-from."""
    run = Path(train.run(make_cfg("task.nominal=adam", "train.max_epochs=1"))["run_dir"])
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["weights"] = {k: v for k, v in ckpt["weights"].items() if ".gate." not in k}
    group = ckpt["meta_optimizer"]["param_groups"][0]
    dropped, group["params"] = group["params"][-2:], group["params"][:-2]  # as many as the gate's weight and bias
    for i in dropped:
        ckpt["meta_optimizer"]["state"].pop(i, None)
    torch.save(ckpt, run / "last.pt")
    with pytest.raises(L2LError, match=re.escape(f"start a new run from its weights with `l2l meta-train "
                                                 f"--init-from {run}`")):
        train.run(make_cfg(f"train.resume={run}", "train.max_epochs=2"))
    assert train.run(make_cfg(f"train.init_from={run}", "task.nominal=adam", "train.max_epochs=1"))["epochs"] == 1


@pytest.mark.parametrize("change, was", [
    ("train.meta_lr=0.01", "train.meta_lr=0.003"), ("task.steps=30", "task.steps=20"),
    ("optimizer=lstm", "optimizer=lstm_gac"), ("seed=1", "seed=0"), ("logger=many", "logger={}"),
    ("~train.imitate", "train.imitate=")])
def test_a_resumed_run_refuses_any_change_but_its_budget(make_cfg, change, was):
    run = train.run(make_cfg("train.max_epochs=1"))["run_dir"]
    with pytest.raises(L2LError, match=re.escape(f"{change}: a resumed run goes on with its own config ({was}")):
        make_cfg(f"train.resume={run}", change)
    assert make_cfg(f"train.resume={run}", "train.patience=5", "train.time_limit=60").train.patience == 5
    with pytest.raises(L2LError, match="train.resume continues a meta-training run, not evaluate"):
        check(make_cfg(f"train.resume={run}"), "evaluate")


@pytest.mark.parametrize("budget, why", [("train.max_epochs=1", "2 epochs done, train.max_epochs=1): raise "
                                          "train.max_epochs"),
                                         ("train.time_limit=0.001", "train.time_limit=0.001): raise train.time_limit")])
def test_a_new_budget_the_run_has_already_spent_is_refused(make_cfg, budget, why):
    run = Path(train.run(make_cfg())["run_dir"])
    before = (run / "last.pt").read_bytes()
    with pytest.raises(L2LError, match=re.escape(why)):
        train.run(make_cfg(f"train.resume={run}", budget))
    assert (run / "last.pt").read_bytes() == before


def test_a_new_budget_survives_a_kill_in_the_first_epoch_it_pays_for(make_cfg, monkeypatch):
    run = train.run(make_cfg("train.max_epochs=1"))["run_dir"]
    real = train.validate
    monkeypatch.setattr(train, "validate", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    assert train.run(make_cfg(f"train.resume={run}", "train.max_epochs=3"))["stop_reason"] == "interrupted"
    monkeypatch.setattr(train, "validate", real)
    assert train.run(make_cfg(f"train.resume={run}", tiny=False))["epochs"] == 3  # no budget given: last.pt's


def test_imitation_term_is_the_relative_squared_error_to_the_teachers_update():
    from l2lcli.optimizers.baselines import SGD, Adam

    params = {"a": torch.randn(3, 4), "b": torch.randn(3, 2, 2)}
    grads = {k: torch.randn_like(p) for k, p in params.items()}
    new = {k: p + torch.randn_like(p) for k, p in params.items()}
    im = bptt.Imitation(SGD("sgd", 0.1), weight=2.0)
    im.start(params)
    err = sum(((new[k] - params[k]) + 0.1 * grads[k]).flatten(1).square().sum(1) for k in params)
    size = sum((0.1 * grads[k]).flatten(1).square().sum(1) for k in params)
    assert im.term(params, new, grads).item() == pytest.approx(2 * (err / size).mean().item(), rel=1e-5)
    # a rule that proposes the teacher's update owes nothing; the teacher's own state moves on with each step
    im = bptt.Imitation(Adam("adam", 0.1), weight=1.0)
    im.start(params)
    im.term(params, new, grads)
    teacher_state = Adam("adam", 0.1).step(params, grads, Adam("adam", 0.1).init_state(params))[1]
    second, _ = Adam("adam", 0.1).step(params, grads, teacher_state)
    assert im.state["t"] == 1 and im.term(params, second, grads).item() == pytest.approx(0.0, abs=1e-10)


def test_imitation_pulls_the_rules_updates_towards_the_teachers(make_cfg):
    """Meta-training with the term ends nearer the teacher than the same meta-training without it."""
    from l2lcli.optimizers.baselines import Adam

    cfg = make_cfg("optimizer=lstm")
    task = build(cfg.task)

    def distance_after(imitation):
        torch.manual_seed(0)
        opt = build(cfg.optimizer)
        meta = torch.optim.Adam(opt.parameters(), lr=0.03)
        for i in range(20):
            bptt.trajectory(task.sample("train", 4, 0, index=i), opt, meta, 10, 10, imitation=imitation)
        probe = bptt.Imitation(Adam("adam", 0.5), 1.0)  # the mean relative error along a fresh trajectory
        problems = task.sample("validation", 8, 0)
        params = problems.init_params()
        state = opt.init_state(params)
        probe.start(params)
        errs = []
        for t in range(10):
            params, _, grads = loss_and_grads(problems, params, t)
            new, state = opt.step(params, grads, state)
            errs.append(probe.term(params, new, grads).item())
            params, state = bptt.tree_detach(new), bptt.tree_detach(state)
        return sum(errs) / len(errs)

    assert distance_after(bptt.Imitation(Adam("adam", 0.5), 100.0)) < 0.5 * distance_after(None)


def test_imitations_weight_falls_to_zero_over_its_epochs(make_cfg):
    cfg = make_cfg("train.imitate.optimizer=nag", "train.imitate.lr=0.5", "train.imitate.weight=2",
                   "train.imitate.epochs=4")
    weights = [train._imitation(cfg.train, e) for e in range(6)]
    assert [w.weight for w in weights[:4]] == [2.0, 1.5, 1.0, 0.5] and weights[4:] == [None, None]
    assert weights[0].teacher.name == "nag" and weights[0].teacher.lr == 0.5
    assert train._imitation(make_cfg().train, 0) is None  # off by default
    r = train.run(make_cfg("train.imitate.optimizer=adam", "train.imitate.lr=0.5", "train.meta_loss=final"))
    assert r["bad_steps"] == 0 and r["best_val_loss"] < float("inf")


def test_train_horizon_sets_the_trajectories_and_validation_not_the_task(make_cfg):
    """train.horizon: meta-training's trajectories and validation runs are that long; the task (what evaluate and
    sweeps run) keeps task.steps; an unroll longer than the horizon is refused by name."""
    from l2lcli.checkpoints import last_checkpoint
    r = train.run(make_cfg("task.steps=4", "train.horizon=8", "train.unroll=4"))
    state = last_checkpoint(r["run_dir"])["train_state"]
    assert len(state["step_loss"]) == 8  # each step's running mean loss: 8 steps per trajectory
    assert load_checkpoint(r["checkpoint"])["config"].task.steps == 4
    assert r["optimizee_steps_per_second"] > 0
    with pytest.raises(L2LError, match="train.unroll=9 is longer than the horizon train.horizon=8"):
        check(make_cfg("task.steps=20", "train.horizon=8", "train.unroll=9"), "meta-train")
