"""One error path: every bad value is refused before work starts, and a failing disk is one line, not a traceback."""

import errno
import functools
import itertools

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from typer.testing import CliRunner

from l2lcli import runs
from l2lcli.cli import app
from l2lcli.config import check, compose, group_choices
from l2lcli.errors import L2LError
from l2lcli.schema import RULES, leaves
from tests.test_cli import l2l, one_line_error
from tests.test_data import idx_root  # noqa: F401  (fixture)

runner = CliRunner()


@functools.cache
def _configs():
    # every task x optimizer under the default recipe, and MNIST under the recipe with keys of its own (recipe.tasks)
    return [compose([f"task={t}", f"optimizer={o}", f"recipe={r}", "logger=many"]) for t, o, r in
            [*itertools.product(group_choices("task"), group_choices("optimizer"), ["best"]),
             ("mnist", "lstm", "family")]]


BAD = ["-1", "0", "foo", "1.5", "''", "[]", "2"]


def _bad_overrides():
    """For every rule of the schema, a value it refuses, in a config where its key exists."""
    cases = []
    for path, rule in RULES.items():
        cfg = next((c for c in _configs() if path in dict(leaves(c))), None)
        if cfg is None:
            continue
        for raw in BAD:
            try:
                value = compose([f"task={cfg.task.name}", f"optimizer={cfg.optimizer.name}",
                                 f"recipe={cfg.recipe.name}", "logger=many", f"{path}={raw}"])
            except L2LError:  # refused as it is composed (recipe.optimizer: the recipe's, not the command line's)
                cases.append((cfg.task.name, cfg.optimizer.name, path, raw, cfg.recipe.name))
                break
            if not rule.ok(dict(leaves(value))[path]):
                cases.append((cfg.task.name, cfg.optimizer.name, path, raw, cfg.recipe.name))
                break
    return cases


CASES = _bad_overrides()


def test_the_bad_values_reach_every_rule():
    assert {c[2] for c in CASES} == set(RULES), sorted(set(RULES) - {c[2] for c in CASES})


@pytest.mark.parametrize("task, optimizer, path, raw, recipe", CASES, ids=[c[2] for c in CASES])
def test_every_rule_refuses_a_bad_value_with_one_line_naming_the_key(task, optimizer, path, raw, recipe):
    with pytest.raises(L2LError) as e:
        check(compose([f"task={task}", f"optimizer={optimizer}", f"recipe={recipe}", "logger=many", f"{path}={raw}"]),
              "evaluate")
    assert str(e.value).startswith(f"{path}=") and "\n" not in str(e.value)


@pytest.mark.parametrize("args, fragment", [
    (["sweep-baselines", "task=mnist", "task.activation=foo"], "task.activation=foo is invalid"),
    (["meta-train", "task=mnist", "task.minibatch=0"], "task.minibatch=0 is invalid"),
    (["meta-train", "optimizer.hidden=0"], "optimizer.hidden=0 is invalid"),
    (["meta-train", "optimizer.p=0"], "optimizer.p=0 is invalid"),  # used to divide by zero and diverge
    (["meta-train", "train.meta_lr_decay=1.5"], "train.meta_lr_decay=1.5 is invalid"),
    (["meta-train", "train.imitate.optimizer=adam"], "train.imitate.optimizer=adam needs its tuned learning rate"),
    (["meta-train", "optimizer=lstm_gac", "optimizer.gac=30"], "more than optimizer.hidden=20"),
    (["meta-train", "optimizer=ntm_lbfgs", "optimizer.history=0"], "optimizer.history=0 is invalid"),
    (["meta-train", "device.threads=0"], "device.threads=0 is invalid"),
    (["meta-train", "device.compile=maybe"], "device.compile=maybe is invalid: it must be true or false"),
    (["sweep-baselines", "eval.seed=-1"], "eval.seed=-1 is invalid"),
    (["sweep-baselines", "task.steps=abc"], "task.steps=abc is invalid"),
    (["sweep-baselines", "+task.foo=1"], "task.foo is not a key"),
    (["meta-train", "optimizer.groups={a:[]}"], "optimizer.groups={a:[]} is invalid"),
    (["meta-train", "optimizer.groups={a:[nothing]}"], "parameter 'theta' (kind vector) matches no group"),
    (["sweep-baselines", "task=cifar", "task.kernel=-3"], "task.kernel=-3 is invalid"),
    (["meta-train", "optimizer=ntm_bfgs", "optimizer.max_memory_floats=1000"], "use optimizer=ntm_lbfgs"),
    (["sweep-baselines", "task=cifar", "task.dataset=mnist", "task.conv_layers=5"], "too deep for 28x28 images"),
    (["sweep-baselines", "seed=18446744073709551616"], "seed=18446744073709551616 is invalid"),
    (["meta-train", "--resume", "nowhere", "--pretrained", "quadratic"], "--resume continues a run with its own"),
])
def test_bad_values_from_the_command_line(tmp_path, args, fragment):
    one_line_error(l2l(*args, out=tmp_path), fragment)
    assert not (tmp_path / args[0]).exists()  # refused before a run folder was made


def test_a_bad_generalization_variant_is_refused_before_any_work(tmp_path):
    assert l2l("meta-train", out=tmp_path).exit_code == 0
    run = next((tmp_path / "meta-train" / "quadratic").iterdir())
    one_line_error(l2l("generalize", "--checkpoint", str(run), "generalize.figure5=[{dim: 0}]", out=tmp_path),
                   "task.dim=0 is invalid")
    assert not (tmp_path / "generalize").exists()


def test_a_full_disk_during_meta_training_is_one_line_and_the_run_resumes(tmp_path, monkeypatch):
    """The second epoch's last.pt cannot be written: exit 2 with one line naming the file; every file finished
    before is whole; `--resume` finishes the run from the first epoch's checkpoint."""
    real_open, calls = open, {"last": 0}

    def filling_disk(file, mode="r", *a, **kw):
        if "w" in str(mode) and ".last.pt." in str(file):
            calls["last"] += 1
            if calls["last"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(runs, "open", filling_disk, raising=False)
    res = l2l("meta-train", out=tmp_path)
    assert res.exit_code == 2 and "Traceback" not in res.output
    last = res.output.strip().splitlines()[-1]  # after the epoch lines of the progress log
    assert last.startswith("error: cannot write") and "No space left on device" in last
    run = next((tmp_path / "meta-train" / "quadratic").iterdir())
    assert str(run / "last.pt") in last and f"--resume {run}" in last
    assert runs.load_checkpoint(run / "last.pt")["train_state"]["epoch"] == 1  # the older file, whole
    assert runs.load_checkpoint(run / "best.pt")["epoch"] >= 1
    assert not list(run.glob(".*tmp"))  # no half-written temp files left behind
    monkeypatch.undo()
    res = runner.invoke(app, ["meta-train", "--resume", str(run)])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(run / "train_log.csv")) == 2 and (run / "summary.json").is_file()


def test_a_resume_that_would_change_the_run_is_one_line_and_a_longer_budget_goes_on(tmp_path):
    assert l2l("meta-train", "train.max_epochs=1", out=tmp_path).exit_code == 0
    run = next((tmp_path / "meta-train" / "quadratic").iterdir())
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    res = runner.invoke(app, ["meta-train", "--resume", str(run), "train.meta_lr=0.01"])
    one_line_error(res, "train.meta_lr=0.01: a resumed run goes on with its own config (train.meta_lr=")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # untouched
    res = runner.invoke(app, ["meta-train", "--resume", str(run), "train.max_epochs=2"])
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(run / "train_log.csv")) == 2


def test_a_full_disk_in_a_sweep_is_one_line(tmp_path, monkeypatch):
    real_open = open

    def full(file, mode="r", *a, **kw):
        if "w" in str(mode) and "summary.json" in str(file):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr(runs, "open", full, raising=False)
    res = l2l("sweep-baselines", out=tmp_path)
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip().splitlines()[-1].startswith("error: cannot write")
    assert "summary.json' (No space left on device)" in res.output
    sweep = next((tmp_path / "sweep-baselines" / "quadratic").iterdir())
    assert len(pd.read_csv(sweep / "best.csv")) == 4  # finished before the failure, and whole


def test_baselines_swept_on_other_problems_are_refused(tmp_path):
    assert l2l("sweep-baselines", "eval.seed=3", out=tmp_path).exit_code == 0
    sweep = next((tmp_path / "sweep-baselines" / "quadratic").iterdir())
    ok = l2l("evaluate", "optimizer=adam", "eval.seed=3", "--baselines", str(sweep), out=tmp_path)
    assert ok.exit_code == 0, ok.output
    for change, fragment in [("eval.seed=4", "eval.seed=3 there, 4 here"),
                             ("eval.problems=16", "eval.problems=32 there, 16 here"),
                             ("eval.steps=30", "eval.steps=20 there, 30 here"),
                             ("task.dim=5", "task.dim=10 there, 5 here"),
                             ("task.distribution=uniform", "task.distribution=gaussian there, uniform here")]:
        args = ["evaluate", "optimizer=adam", "eval.seed=3", change, "--baselines", str(sweep)]
        one_line_error(l2l(*args, out=tmp_path), fragment)


def test_a_checkpoint_is_read_once_per_command(tmp_path, monkeypatch):
    assert l2l("meta-train", out=tmp_path).exit_code == 0
    run = next((tmp_path / "meta-train" / "quadratic").iterdir())
    real_load, loads = torch.load, []
    monkeypatch.setattr(torch, "load", lambda f, *a, **kw: loads.append(f) or real_load(f, *a, **kw))
    res = l2l("evaluate", "--checkpoint", str(run), out=tmp_path)
    assert res.exit_code == 0, res.output
    assert len(loads) == 1, loads


def test_a_checkpoints_nulls_are_inherited_across_tasks_and_bad_overrides_stay_one_line(tmp_path, idx_root):  # noqa: F811
    """A quadratic run (one LSTM: groups null) fine-tunes on MNIST, whose default recipe names two groups: the
    saved null must win, or the weights would not fit."""
    assert l2l("meta-train", out=tmp_path).exit_code == 0
    run = next((tmp_path / "meta-train" / "quadratic").iterdir())
    res = l2l("meta-train", "task=mnist", f"data.root={idx_root}", "task.minibatch=8", "task.hidden=3",
              "train.batch_size=1", "train.validation_problems=2", "--init-from", str(run), out=tmp_path)
    assert res.exit_code == 0, res.output
    tuned = next((tmp_path / "meta-train" / "mnist").iterdir())
    assert OmegaConf.load(tuned / "config.yaml").optimizer.groups is None
    one_line_error(l2l("evaluate", "--checkpoint", str(run), "train.unroll=[", out=tmp_path), "bad override")


def test_sweeps_from_an_older_l2l_and_bare_best_csvs(tmp_path):
    assert l2l("sweep-baselines", out=tmp_path).exit_code == 0
    sweep = next((tmp_path / "sweep-baselines" / "quadratic").iterdir())
    saved = (sweep / "config.yaml").read_text()
    (sweep / "config.yaml").write_text(saved.replace("  groups: null\n", "", 1))  # a key added since that sweep
    assert l2l("evaluate", "optimizer=adam", "--baselines", str(sweep), out=tmp_path).exit_code == 0
    bare = tmp_path / "elsewhere"
    bare.mkdir()
    (bare / "best.csv").write_bytes((sweep / "best.csv").read_bytes())
    one_line_error(l2l("evaluate", "optimizer=adam", "--baselines", str(bare / "best.csv"), out=tmp_path),
                   "has no config.yaml beside it")
