"""One meta-training across processes (torch.distributed, gloo on this CPU): the same step as one process."""

import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from l2lcli.bptt import trajectory
from l2lcli.config import build, compose
from l2lcli.distributed import join
from l2lcli.optimizers.cells import fuse
from l2lcli.runs import load_checkpoint
from l2lcli.tasks.quadratic import QuadraticBatch
from tests.conftest import TIMES, TINY

STEPS = 5  # one unroll: one meta step


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_meta_step(problems, world=None):
    """The LSTM optimizer (seed 0) after one meta step on `problems`."""
    fuse(False)
    torch.manual_seed(0)
    optimizer = build(compose(["optimizer=lstm"]).optimizer)
    # plain SGD: the weights move by the meta-gradient itself (ADAM's first step, g / |g|, would turn float noise
    # in a near-zero gradient into a whole step of either sign)
    meta = torch.optim.SGD(optimizer.parameters(), lr=0.1)
    trajectory(problems, optimizer, meta, STEPS, STEPS, **({"world": world} if world else {}))
    return optimizer.state_dict()


def _rank(rank: int, port: int, batch: tuple, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    world = join(torch.device("cpu"), 4, None)
    half = QuadraticBatch(*(x[2 * rank:2 * rank + 2] for x in batch))  # this rank's half of the batch
    weights = one_meta_step(half, world)
    if world.main:
        torch.save(weights, out)
    world.leave()


def test_one_meta_step_on_two_processes_equals_one_process_with_both_halves(tmp_path):
    batch = build(compose([]).task).sample("train", 4, seed=0)
    tensors = (batch.W, batch.y, batch.theta0)
    mp.spawn(_rank, args=(free_port(), tensors, str(tmp_path / "rank0.pt")), nprocs=2, join=True)
    two = torch.load(tmp_path / "rank0.pt")
    one = one_meta_step(QuadraticBatch(*tensors))
    torch.manual_seed(0)
    before = build(compose(["optimizer=lstm"]).optimizer).state_dict()
    assert any(not torch.equal(before[k], one[k]) for k in one)  # the step did change the weights
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-5, atol=1e-6)


def _rank_with_a_blown_up_problem(rank: int, port: int, batch: tuple, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank),
                      LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2")
    world = join(torch.device("cpu"), 4, None)
    W, y, theta0 = (x[2 * rank:2 * rank + 2].clone() for x in batch)
    if rank == 1:
        theta0[0] = math.inf  # only this rank's meta-loss is not finite
    fuse(False)
    torch.manual_seed(0)
    optimizer = build(compose(["optimizer=lstm"]).optimizer)
    before = {k: v.clone() for k, v in optimizer.state_dict().items()}
    meta = torch.optim.SGD(optimizer.parameters(), lr=0.1)
    _, ok = trajectory(QuadraticBatch(W, y, theta0), optimizer, meta, STEPS, STEPS, world=world)
    unchanged = all(torch.equal(before[k], v) for k, v in optimizer.state_dict().items())
    torch.save({"ok": ok, "unchanged": unchanged}, f"{out}.{rank}")
    world.leave()


@pytest.mark.slow  # kept out of the default suite's 5 minutes; `make test-all` runs it
def test_a_meta_step_not_finite_on_one_rank_is_refused_on_every_rank(tmp_path):
    batch = build(compose([]).task).sample("train", 4, seed=0)
    out = str(tmp_path / "rank")
    mp.spawn(_rank_with_a_blown_up_problem, args=(free_port(), (batch.W, batch.y, batch.theta0), out), nprocs=2)
    for rank in (0, 1):  # rank 0's own problems were fine: it refuses the step all the same
        assert torch.load(f"{out}.{rank}") == {"ok": False, "unchanged": True}


def test_torchrun_refuses_a_batch_that_does_not_split_and_other_commands(monkeypatch, make_cfg):
    from l2lcli import multirun
    from l2lcli.commands import evaluate, experiment
    from l2lcli.errors import L2LError

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(L2LError, match="does not split over 2 processes"):
        join(torch.device("cpu"), 5, None)
    for refused in (lambda: evaluate.run(make_cfg("optimizer=adam")), lambda: experiment.run(make_cfg()),
                    lambda: multirun.run("meta-train", ["seed=0,1"])):
        with pytest.raises(L2LError, match="torchrun runs meta-train"):
            refused()
    assert not (Path(make_cfg().out_dir)).exists()  # refused before any run folder


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _torchrun(*args):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
            "-m", "l2lcli", *args]


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    recipe = [*TINY, "train.epoch_trajectories=8", "train.max_epochs=4", "train.patience=4",
              "train.meta_loss=relative"]  # its running step means: the same on every rank, and after a resume
    ref = subprocess.run(_torchrun("meta-train", f"out_dir={tmp_path / 'ref'}", *recipe), env=env,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]
    [ref_dir] = (tmp_path / "ref" / "meta-train" / "quadratic").iterdir()  # one folder: rank 0's
    assert load_checkpoint(ref_dir / "best.pt")["config"].train.batch_size == 16

    proc = subprocess.Popen(_torchrun("meta-train", f"out_dir={tmp_path / 'killed'}", *recipe), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = tmp_path / "killed" / "meta-train" / "quadratic"
    deadline = time.time() + 200
    while time.time() < deadline:  # kill every process once two epochs are on disk
        logs = list(root.glob("*/train_log.csv"))
        if logs and len(pd.read_csv(logs[0])) >= 2:
            break
        time.sleep(0.02)
    for pid in [*descendants(proc.pid), proc.pid]:  # torchrun starts each worker in a session of its own
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    [run_dir] = root.iterdir()
    assert not (run_dir / "summary.json").exists(), "the run finished before it was killed"
    res = subprocess.run(_torchrun("meta-train", "--resume", str(run_dir)), env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    a, b = pd.read_csv(ref_dir / "train_log.csv"), pd.read_csv(run_dir / "train_log.csv")
    pd.testing.assert_frame_equal(a.drop(columns=TIMES), b.drop(columns=TIMES))
