"""Meta-training on a family of tasks (task.family, recipe=family): members drawn per batch, validation over
members, each member's own running means; evaluation never sees the family."""

import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from l2lcli.bptt import validate
from l2lcli.cli import app
from l2lcli.commands import train
from l2lcli.config import build, compose
from l2lcli.errors import L2LError
from l2lcli.runs import load_checkpoint
from tests.conftest import load_benchmark
from tests.test_data import idx_root  # noqa: F401  (fixture)
from tests.test_mnist import MNIST_TINY

FAMILY = "task.family={layers:[1,2,3],hidden:[3,4],activation:[sigmoid,relu]}"


def test_each_batch_is_drawn_from_a_member_by_its_own_stream(make_cfg, idx_root):  # noqa: F811
    task = build(make_cfg(*MNIST_TINY, f"data.root={idx_root}", FAMILY).task)
    batches = [task.sample("train", 2, seed=0, index=i, member=True) for i in range(24)]
    members = {b.member for b in batches}
    assert len(members) > 3  # several depths, widths and activations are met
    for b in batches:  # the batch is the member its label names
        m = dict(kv.split("=") for kv in b.member.split())
        assert sum(s.name.endswith(".w") for s in b.specs) == int(m["layers"]) + 1
        assert b.specs[0].shape == (784, int(m["hidden"])) and b.act.__name__ == m["activation"]
    again = task.sample("train", 2, seed=0, index=5, member=True)  # the same key gives the same member and weights
    assert again.member == batches[5].member
    assert all(torch.equal(again.params0[k], batches[5].params0[k]) for k in again.params0)
    plain = task.sample("test", 2, seed=0)  # evaluation: the task's own keys, not a member
    assert plain.member == "" and [s.shape for s in plain.specs] == [s.shape for s in build(
        make_cfg(*MNIST_TINY, f"data.root={idx_root}").task).sample("test", 2, seed=0).specs]


def test_a_task_without_a_family_samples_as_before(make_cfg):
    task = build(make_cfg().task)
    a, b = task.sample("train", 4, seed=0, index=3), task.sample("train", 4, seed=0, index=3, member=True)
    assert b.member == "" and torch.equal(a.W, b.W) and torch.equal(a.theta0, b.theta0)


def test_quadratics_vary_their_dimension(make_cfg):
    task = build(make_cfg("task.family={dim:[2,3,7]}").task)
    dims = {task.sample("train", 2, seed=0, index=i, member=True).theta0.shape[1] for i in range(30)}
    assert dims == {2, 3, 7}


@pytest.mark.parametrize("family, message", [
    ("{dim:[2]}", "task.family varies dim, which task=mnist cannot: task.family may vary layers, hidden, activation"),
    ("{depth:[2]}", "task.family varies depth, which task=mnist cannot"),
    ("{hidden:[0]}", "task.family={hidden:[0]} is invalid"),
    ("{activation:[swish]}", "task.family={activation:[swish]} is invalid"),
    ("{hidden:[]}", "task.family={hidden:[]} is invalid"),
])
def test_a_bad_family_is_one_line_and_exit_2(tmp_path, family, message):
    res = CliRunner().invoke(app, ["meta-train", f"out_dir={tmp_path}", *MNIST_TINY, f"task.family={family}"])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_the_family_recipe_is_mnists_and_only_mnists(tmp_path):
    cfg = compose(["task=mnist", "recipe=family"])
    best = compose(["task=mnist"])
    assert set(cfg.task.family) == {"layers", "hidden", "activation"} and list(cfg.task.family.layers) == [1, 2, 3]
    assert cfg.train.validation_batches > 1 and best.train.validation_batches == 1 and best.task.family is None
    # its nominal is ADAM (NAG's tuned rate moves 5x across the family); everything else is MNIST's best recipe
    assert (cfg.task.nominal, cfg.task.nominal_lr, best.task.nominal) == ("adam", 0.0464, "nag")
    for key in ("task.groups", "task.problem_inputs", "train.meta_loss", "train.time_limit"):
        assert str(cfg[key.split(".")[0]][key.split(".")[1]]) == str(best[key.split(".")[0]][key.split(".")[1]])
    res = CliRunner().invoke(app, ["meta-train", f"out_dir={tmp_path}", "task=quadratic", "recipe=family"])
    assert res.exit_code == 2 and "recipe=family is for task=mnist, not task=quadratic" in res.output


def test_validation_over_several_batches_is_their_geometric_mean(make_cfg):
    cfg = make_cfg()
    task, rule = build(cfg.task), build(cfg.optimizer)
    batches = [task.sample("validation", 4, seed=0, index=i) for i in range(3)]
    each = [validate([b], rule, 10) for b in batches]
    assert validate(batches, rule, 10) == pytest.approx(math.exp(sum(map(math.log, each)) / 3), rel=1e-9)
    assert validate(batches[:1], rule, 10) == each[0]  # one batch: its mean final loss, as always


def test_meta_training_on_a_family_keeps_each_members_running_means(tmp_path, idx_root):  # noqa: F811
    overrides = [f"out_dir={tmp_path}", f"data.root={idx_root}", *MNIST_TINY, FAMILY, "train.meta_loss=relative",
                 "train.epoch_trajectories=6", "train.validation_batches=3"]
    results = train.run(compose(overrides))
    assert math.isfinite(results["best_val_loss"])
    last = load_checkpoint(f"{results['run_dir']}/last.pt")["train_state"]
    members = last["member_loss"]
    assert len(members) >= 2 and last["step_loss"] == []  # the members' running means, not one for all
    assert all(len(v) == 6 for v in members.values())  # task.steps=6


def test_members_share_the_data_loaded_once(make_cfg, idx_root):  # noqa: F811
    task = build(make_cfg(*MNIST_TINY, f"data.root={idx_root}", FAMILY).task)
    a, b = task.member(np.random.default_rng(0)), task.member(np.random.default_rng(1))
    assert task._data is not None and a._data is task._data and b._data is task._data


def test_every_member_must_fit_not_only_the_task(make_cfg):
    from l2lcli.commands.common import fits
    cfg = make_cfg("optimizer=ntm_bfgs", "optimizer.max_memory_floats=1000")  # a dense memory of dim^2 floats
    fits(build(cfg.optimizer), build(cfg.task), 1)  # 10-d: 100 floats
    family = build(make_cfg("task.family={dim:[10,40]}").task)
    assert len(family.members()) == 2
    with pytest.raises(L2LError, match="40 coordinates"):
        fits(build(cfg.optimizer), family, 1)


def test_a_killed_family_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path, idx_root, monkeypatch):  # noqa: F811
    overrides = [f"data.root={idx_root}", *MNIST_TINY, FAMILY, "train.meta_loss=relative", "train.max_epochs=2",
                 "train.epoch_trajectories=4", "train.validation_batches=2"]
    straight = train.run(compose([f"out_dir={tmp_path / 'a'}", *overrides]))
    stop = train._stop_reason
    monkeypatch.setattr(train, "_stop_reason", lambda s, tc: (_ for _ in ()).throw(KeyboardInterrupt)
                        if s.epoch == 1 else stop(s, tc))
    first = train.run(compose([f"out_dir={tmp_path / 'b'}", *overrides]))
    assert first["stop_reason"] == "interrupted" and first["epochs"] == 1
    monkeypatch.setattr(train, "_stop_reason", stop)
    resumed = train.run(compose([f"train.resume={first['run_dir']}"]))
    assert resumed["epochs"] == 2 and resumed["best_val_loss"] == straight["best_val_loss"]
    a, b = (load_checkpoint(f"{r['run_dir']}/last.pt") for r in (straight, resumed))
    assert all(torch.equal(a["weights"][k], b["weights"][k]) for k in a["weights"])
    assert a["train_state"]["member_loss"] == b["train_state"]["member_loss"] != {}


def test_build_passes_a_tasks_own_refusal_through(make_cfg):
    with pytest.raises(L2LError, match="may vary dim"):
        build(make_cfg("task.family={hidden:[3]}").task)


def test_the_family_is_not_part_of_the_evaluation_problems(make_cfg):
    from l2lcli.commands.evaluate import problem_key
    plain, family = make_cfg("task=mnist"), make_cfg("task=mnist", "recipe=family")
    assert family.task.family and problem_key(plain) == problem_key(family)  # one sweep serves both
    assert problem_key(plain) != problem_key(make_cfg("task=mnist", "task.layers=2"))


def test_the_family_validation_benchmark_scores_rules_as_meta_training_did(tmp_path, idx_root, capsys):  # noqa: F811
    bench = load_benchmark("family_validation")
    # validation runs train.horizon steps, not task.steps (recipe=long): the benchmark must score there too
    overrides = [f"data.root={idx_root}", *MNIST_TINY, FAMILY, "train.validation_batches=3", "train.horizon=9"]
    family = train.run(compose([f"out_dir={tmp_path / 'family'}", *overrides]))
    plain = train.run(compose([f"out_dir={tmp_path / 'plain'}", *overrides, "task.family=null"]))
    scores = bench.main(["--family", family["run_dir"], family["run_dir"], plain["run_dir"]])
    assert scores[family["run_dir"]] == pytest.approx(family["best_val_loss"], rel=1e-6)
    assert scores[plain["run_dir"]] != scores[family["run_dir"]]  # another rule, the same problems
    assert capsys.readouterr().out.count("layers=") >= 3  # the members it drew, named


def test_validation_members_spread_over_every_value_of_every_key(make_cfg, idx_root):  # noqa: F811
    task = build(make_cfg(*MNIST_TINY, f"data.root={idx_root}", FAMILY).task)
    members = task.spread(8, np.random.default_rng(0))
    for key, values in task.family.items():
        counts = [sum(getattr(m, key) == v for m in members) for v in values]
        assert min(counts) >= 1 and max(counts) - min(counts) <= 1, (key, counts)  # as even as 8 allows
    pairs = {(m.layers, m.activation) for m in members}
    assert len(pairs) > 3  # paired at random, not value i of every key together


@pytest.mark.parametrize("how", ["spread", "random"])
def test_the_validation_set_draws_its_members_as_configured(make_cfg, idx_root, how):  # noqa: F811
    from l2lcli.bptt import validation_set
    cfg = make_cfg(*MNIST_TINY, f"data.root={idx_root}", "task.family={layers:[1,2,3]}", "train.validation_batches=6",
                   "train.validation_problems=2", f"train.validation_members={how}")
    task = build(cfg.task)
    batches, again = validation_set(task, cfg.train, seed=0), validation_set(task, cfg.train, seed=0)
    assert [b.member for b in batches] == [b.member for b in again]  # the same set each time
    assert all(torch.equal(a.params0[k], b.params0[k]) for a, b in zip(batches, again, strict=True) for k in a.params0)
    depths = sorted(b.member for b in batches)
    if how == "spread":
        assert depths == sorted(f"layers={n}" for n in (1, 1, 2, 2, 3, 3))
    else:  # each batch's own stream picks its member, as runs saved before the key did
        assert depths == sorted(task.sample("validation", 2, 0, index=i, member=True).member for i in range(6))
