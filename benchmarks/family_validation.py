"""Several rules on one family run's validation problems: the score meta-training chose its checkpoint by.

    python benchmarks/family_validation.py --family RUN CHECKPOINT [CHECKPOINT ...]

RUN is a meta-train run of a task family (task.family, e.g. recipe=family); its validation batches (seed,
train.validation_problems x train.validation_batches, each from its own member) are drawn again, and each
checkpoint's rule is scored on them as meta-training scores: at the run's horizon (train.horizon, else task.steps),
the geometric mean over the batches of their mean final loss. A rule meta-trained on one net only is compared there
with the family's rules, on the very same problems.
"""

from __future__ import annotations

import argparse

import torch

from l2lcli.bptt import final_losses, score, validation_set
from l2lcli.config import build, horizon_of
from l2lcli.device import resolve_device
from l2lcli.runs import load_checkpoint, rule_from


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", required=True, help="a meta-train run folder of a task family")
    ap.add_argument("checkpoints", nargs="+", help="meta-train run folders or .pt files of the same task")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    cfg = load_checkpoint(args.family)["config"]
    device = resolve_device(cfg)  # as the run had it: compiled cells, freed memory reused, its threads
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = validation_set(build(cfg.task), cfg.train, cfg.seed, device)
    print("members:", "; ".join(b.member or "the task" for b in batches), flush=True)
    scores = {}
    for path in args.checkpoints:
        each = final_losses(batches, rule_from(load_checkpoint(path)).to(device), horizon_of(cfg))
        scores[path] = score(each)
        print(f"{scores[path]:.4f}  {path}  (per batch: {', '.join(f'{x:.3g}' for x in each)})", flush=True)
    return scores


if __name__ == "__main__":
    main()
