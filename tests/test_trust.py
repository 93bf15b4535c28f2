"""Faults injected on purpose: SIGKILL and resume, NaN meta-steps, concurrent runs, half-written files."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from l2lcli import bptt
from l2lcli.commands import train
from l2lcli.errors import L2LError
from l2lcli.runs import atomic, load_checkpoint, new_run_dir
from tests.conftest import TIMES, TINY

RESUMABLE = [*TINY, "train.epoch_trajectories=8", "train.max_epochs=4", "train.patience=4"]


def _cli(*args):
    return [sys.executable, "-m", "l2lcli.cli", *args]


@pytest.mark.slow  # three meta-trainings in subprocesses: kept out of the default suite's 5 minutes
def test_sigkill_then_resume_gives_the_numbers_of_an_uninterrupted_run(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    ref = subprocess.run(_cli("meta-train", f"out_dir={tmp_path / 'ref'}", *RESUMABLE), env=env,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    ref_dir = next((tmp_path / "ref" / "meta-train" / "quadratic").iterdir())

    proc = subprocess.Popen(_cli("meta-train", f"out_dir={tmp_path / 'killed'}", *RESUMABLE), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = tmp_path / "killed" / "meta-train" / "quadratic"
    deadline = time.time() + 200
    while time.time() < deadline:  # kill once two epochs are on disk, mid-run
        logs = list(root.glob("*/train_log.csv"))
        if logs and len(pd.read_csv(logs[0])) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_dir = next(root.iterdir())
    assert not (run_dir / "summary.json").exists(), "the run finished before it was killed"
    assert load_checkpoint(run_dir / "last.pt")["train_state"]["epoch"] >= 1  # the last good checkpoint loads

    res = subprocess.run(_cli("meta-train", "--resume", str(run_dir)), env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    a, b = pd.read_csv(ref_dir / "train_log.csv"), pd.read_csv(run_dir / "train_log.csv")
    pd.testing.assert_frame_equal(a.drop(columns=TIMES), b.drop(columns=TIMES))
    wa, wb = load_checkpoint(ref_dir / "best.pt")["weights"], load_checkpoint(run_dir / "best.pt")["weights"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_refuses_a_best_checkpoint(make_cfg):
    run = Path(train.run(make_cfg())["run_dir"])
    with pytest.raises(L2LError, match="cannot resume"):
        train.run(make_cfg(f"train.resume={run / 'best.pt'}"))


def test_nan_meta_steps_are_skipped_counted_and_never_saved(make_cfg, monkeypatch):
    real = bptt.meta_loss_term
    calls = {"n": 0}

    def sometimes_nan(loss, kind, **kw):
        calls["n"] += 1
        out = real(loss, kind, **kw)
        return out * float("nan") if calls["n"] % 7 == 0 else out

    monkeypatch.setattr(bptt, "meta_loss_term", sometimes_nan)
    r = train.run(make_cfg())
    assert r["bad_steps"] > 0
    log = pd.read_csv(Path(r["run_dir"]) / "train_log.csv")
    assert log["bad_steps"].iloc[-1] == r["bad_steps"]
    weights = load_checkpoint(r["checkpoint"])["weights"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_a_run_that_only_diverges_stops_with_a_clear_message(make_cfg, monkeypatch):
    monkeypatch.setattr(bptt, "meta_loss_term", lambda loss, kind, **kw: loss.mean() * float("nan"))
    with pytest.raises(L2LError, match="diverged: 3 non-finite meta steps in a row"):
        train.run(make_cfg("train.max_bad_steps=3"))


def test_runs_started_together_get_their_own_folders(make_cfg):
    cfg = make_cfg()
    paths = []
    threads = [threading.Thread(target=lambda: paths.append(new_run_dir(cfg, "meta-train"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 8


def test_atomic_write_leaves_the_old_file_when_the_writer_dies(tmp_path):
    target = tmp_path / "result.csv"
    target.write_text("complete\n")

    def dies(tmp):
        Path(tmp).write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic(target, dies)
    assert target.read_text() == "complete\n" and list(tmp_path.iterdir()) == [target]


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path):
    proc = subprocess.Popen(_cli("meta-train", f"out_dir={tmp_path}", *RESUMABLE, "train.max_epochs=50"),
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 200
    while time.time() < deadline and not list(tmp_path.glob("meta-train/quadratic/*/last.pt")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    run_dir = next((tmp_path / "meta-train" / "quadratic").iterdir())
    assert f"--resume {run_dir}" in " ".join(err.split()) and "Traceback" not in err
    assert load_checkpoint(run_dir / "last.pt")["train_state"]["epoch"] >= 1
    assert (run_dir / "summary.json").is_file()


def test_checkpoints_of_the_flat_layout_still_evaluate_and_resume(make_cfg):
    """A run saved before tasks/ and optimizers/ existed names its classes by their old paths and has no recipe."""
    import yaml

    r = train.run(make_cfg("train.max_epochs=1", "optimizer=lstm"))  # the only learned optimizer then
    run = Path(r["run_dir"])
    old = {"l2lcli.tasks.quadratic.QuadraticFamily": "l2lcli.tasks.Quadratic",
           "l2lcli.optimizers.learned.LSTMOptimizer": "l2lcli.learned.LSTMOptimizer"}
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run / name, weights_only=True)
        cfg = yaml.safe_load(ckpt["config"])
        cfg.pop("recipe")
        cfg["task"].pop("groups")
        cfg["task"]["_target_"] = old[cfg["task"]["_target_"]]
        cfg["optimizer"]["_target_"] = old[cfg["optimizer"]["_target_"]]
        ckpt["config"] = yaml.safe_dump(cfg)
        torch.save(ckpt, run / name)
    from l2lcli.commands import common, evaluate

    e = evaluate.run(common.compose_for([f"out_dir={make_cfg().out_dir}", *TINY], checkpoint=str(run),
                                        **{"eval.checkpoint": str(run)}))
    assert e["rows"][0]["optimizer"] == "lstm" and e["rows"][0]["final_loss"] > 0
    resumed = train.run(make_cfg(f"train.resume={run}", "train.max_epochs=2"))
    assert resumed["epochs"] == 2 and resumed["recipe"] == "none"  # its own config, with the budget given


def test_written_files_follow_the_umask_not_mkstemps_owner_only_mode(tmp_path):
    from l2lcli.runs import write_text

    umask = os.umask(0o022)
    os.umask(umask)
    write_text(tmp_path / "a.txt", "x")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask != 0o600
