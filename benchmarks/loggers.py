"""What a logger costs a run: opening it, one meta-training epoch's row, an evaluation's curves, closing the run.

    python benchmarks/loggers.py [--repeats 9] [--out DIR]

Each figure is the median over --repeats fresh runs, per logger choice, written into a temporary folder (the MLflow
store is local SQLite there). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pandas as pd

from l2lcli.config import compose
from l2lcli.loggers import open_loggers
from l2lcli.runs import new_run_dir

EPOCH = {"epoch": 1, "trajectories": 40, "meta_loss": 1.0, "val_loss": 2.0, "best_val_loss": 2.0, "meta_lr": 3e-3,
         "bad_steps": 0, "seconds": 1.0, "epoch_seconds": 1.0, "optimizee_steps_per_second": 1e5}
# evaluate on MNIST: the learned optimizer and four baselines, 101 points each
CURVES = pd.DataFrame([{"optimizer": o, "lr": 0.1, "learned": False, "step": s, "mean_loss": 1 / (s + 1),
                        "median_loss": 1 / (s + 2), "log10_mean_loss": 0.0}
                       for o in ("lstm", "sgd", "rmsprop", "adam", "nag") for s in range(101)])


def one_run(choice: str, out: str) -> dict[str, float]:
    """Seconds for each stage of one run's logging."""
    times, t = {}, time.perf_counter()
    cfg = compose([f"logger={choice}", f"out_dir={out}"])
    log = open_loggers(cfg, "evaluate", {"source": "generated"})
    log.start(new_run_dir(cfg, "evaluate"))
    times["open"], t = time.perf_counter() - t, time.perf_counter()
    log.write_csv(log.run_dir / "train_log.csv", pd.DataFrame([EPOCH]))
    times["epoch row"], t = time.perf_counter() - t, time.perf_counter()
    log.write_csv(log.run_dir / "curves.csv", CURVES)
    times["curves, 505 rows"], t = time.perf_counter() - t, time.perf_counter()
    log.finish()
    times["finish"] = time.perf_counter() - t
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default=None, help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="l2l-bench-loggers-")
    rows = []
    for choice in ("csv", "tensorboard", "mlflow", "many"):
        one_run(choice, out)  # warm-up: imports, the SQLite store's tables
        runs = [one_run(choice, out) for _ in range(args.repeats)]
        rows.append({"logger": choice, **{f"{k} (ms)": 1e3 * statistics.median(r[k] for r in runs) for k in runs[0]}})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    print(f"median of {args.repeats} runs each, under {out}")


if __name__ == "__main__":
    main()
