"""Past one process: many runs through Hydra's launchers, one meta-training across processes with torchrun.

    python benchmarks/scale.py [--epochs 2] [--seeds 4] [--art]

1. `l2l meta-train -m seed=0..3` on the quadratic recipe: the basic launcher (one job after another, each with every
   core) against joblib with 2 workers (one thread each): wall time and speedup.
2. One quadratic meta-training at the same total batch (128 problems per trajectory): one process with one thread
   against `torchrun --nproc_per_node=2` (one thread each): optimizee steps per second and scaling efficiency.
   With --art, the same on the neural-art task (4 images per trajectory, 4 trajectories), where each step's work
   (VGG features of 64x64 images) dominates, rather than its overhead.

Every figure is one run of the installed `l2l` (each several tens of seconds). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

L2L = [sys.executable, "-m", "l2lcli"]


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, **(env or {})})
    return time.perf_counter() - start


def summary(out: Path) -> dict:
    [run] = (out / "meta-train").glob("*/*")
    return json.loads((run / "summary.json").read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="meta-training epochs per run (40 trajectories each)")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--art", action="store_true", help="also torchrun on the art task (several minutes)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="l2l-bench-scale-"))
    # the plain LSTM, as the figures in the README were measured (quadratics' recipe now names LSTM+GAC)
    train = [f"train.max_epochs={args.epochs}", "train.time_limit=null", "optimizer=lstm"]
    seeds = "seed=" + ",".join(map(str, range(args.seeds)))

    basic = timed([*L2L, "meta-train", "-m", seeds, *train, f"out_dir={root / 'basic'}"])
    joblib = timed([*L2L, "meta-train", "-m", seeds, *train, f"out_dir={root / 'joblib'}", "hydra/launcher=joblib",
                    "hydra.launcher.n_jobs=2"])
    print(f"{args.seeds} seeds x {args.epochs} epochs of the quadratic recipe (l2l meta-train -m {seeds}):")
    print(f"  basic launcher, one job at a time (all cores each):  {basic:7.1f} s")
    print(f"  joblib, 2 workers (1 thread each):                  {joblib:7.1f} s   speedup {basic / joblib:.2f}x")

    scaling(root / "quadratic", train, "one quadratic meta-training, "
            f"{args.epochs} epochs, 128 problems per trajectory in all")
    if args.art:
        scaling(root / "art", ["task=art", "train.epoch_trajectories=4", "train.max_epochs=1",
                               "train.validation_problems=2", "train.time_limit=null"],
                "one art meta-training, 4 trajectories of 4 images (64x64) in all")
    print(f"runs under {root}")


def scaling(root: Path, overrides: list[str], title: str) -> None:
    """One process with one thread against two under torchrun, at the same total batch."""
    one_wall = timed([*L2L, "meta-train", *overrides, "device.threads=1", f"out_dir={root / 'one'}"])
    two_wall = timed([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                      str(free_port()), "-m", "l2lcli", "meta-train", *overrides, f"out_dir={root / 'two'}"])
    rate1 = summary(root / "one")["optimizee_steps_per_second"]
    rate2 = summary(root / "two")["optimizee_steps_per_second"]
    print(f"{title}:")
    print(f"  1 process, 1 thread:                  {rate1:9.1f} optimizee steps/s   ({one_wall:.1f} s wall)")
    print(f"  torchrun, 2 processes, 1 thread each: {rate2:9.1f} optimizee steps/s   ({two_wall:.1f} s wall)")
    print(f"  speedup {rate2 / rate1:.2f}x, scaling efficiency {rate2 / rate1 / 2:.0%} (validation runs on rank 0 "
          "alone)")


if __name__ == "__main__":
    main()
