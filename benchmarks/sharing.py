"""Issue 4's comparison: LSTM, LSTM+GAC, NTM-BFGS and NTM-L-BFGS meta-trained with the same time budget on
quadratics, evaluated on the same test problems against the best tuned baseline.

    python benchmarks/sharing.py [--seconds 120] [--task quadratic]

Prints final loss, ratio to the best baseline, and cost per optimizee step relative to ADAM.
"""

from __future__ import annotations

import argparse
import tempfile

from l2lcli.commands import evaluate, sweep, train
from l2lcli.config import compose


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="meta-training budget per optimizer")
    parser.add_argument("--task", default="quadratic")
    parser.add_argument("--optimizers", default="lstm,lstm_gac,ntm_bfgs,ntm_lbfgs")
    args = parser.parse_args()
    out = tempfile.mkdtemp(prefix="l2l-sharing-")
    base = [f"task={args.task}", "recipe=paper", f"out_dir={out}"]  # the paper's forms: no recipe's extra inputs
    swept = sweep.run(compose(base))
    print(f"{'optimizer':<10} {'epochs':>6} {'final loss':>11} {'vs best baseline':>17} {'cost vs ADAM':>13}")
    for name in args.optimizers.split(","):
        trained = train.run(compose([*base, f"optimizer={name}", f"train.time_limit={args.seconds}"]))
        e = evaluate.run(compose([*base, f"optimizer={name}", f"eval.checkpoint={trained['checkpoint']}",
                                  f"eval.baselines={swept['run_dir']}"]))
        row = e["rows"][0]
        print(f"{name:<10} {trained['epochs']:>6} {row['final_loss']:>11.4g} {row['ratio_to_best_baseline']:>17.3f} "
              f"{row['cost_vs_adam']:>13.1f}", flush=True)
    best = swept["table"].sort_values("final_loss").iloc[0]
    print(f"best baseline: {best['optimizer']} lr {best['lr']:.3g}, final loss {best['final_loss']:.4g}")


if __name__ == "__main__":
    main()
