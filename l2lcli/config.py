"""Compose the run config from `conf/` (Hydra's Compose API), check it, and build objects from it."""

from __future__ import annotations

import copy
import functools
import importlib.resources
import re

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.singleton import Singleton
from hydra.errors import HydraException, InstantiationException, MissingConfigException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .checkpoints import last_checkpoint
from .data.datasets import SHAPES
from .errors import L2LError, one_line
from .schema import check_values, show

CONFIG_MODULE = "l2lcli.conf"
GROUPS = ("task", "optimizer", "device", "recipe", "logger")
MANY = ("logger",)  # groups that take a list of choices: logger=[tensorboard,mlflow]
BASELINE_TARGETS = "l2lcli.optimizers.baselines."
# Where classes named by the configs saved in older checkpoints live now (the flat layout before tasks/, optimizers/).
MOVED = {"l2lcli.tasks.Quadratic": "l2lcli.tasks.quadratic.QuadraticFamily",
         "l2lcli.tasks.MNIST": "l2lcli.tasks.mlp.MLPFamily",
         **{f"l2lcli.learned.{c}": f"l2lcli.optimizers.learned.{c}" for c in ("LSTMOptimizer", "NTMOptimizer")},
         **{f"l2lcli.baselines.{c}": f"{BASELINE_TARGETS}{c}" for c in ("SGD", "RMSprop", "Adam", "NAG")}}


def group_choices(group: str) -> list[str]:
    """The options of a config group, read from the shipped `conf/` package."""
    root = importlib.resources.files(CONFIG_MODULE) / group
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def is_hydra(override: str) -> bool:
    """An override of Hydra's own config (hydra/launcher=joblib, hydra.launcher.n_jobs=2), not of l2l's."""
    return override.lstrip("+~").startswith(("hydra/", "hydra."))


def compose(overrides: list[str] | None = None, inherit: DictConfig | None = None,
            groups: tuple[str, ...] = (), source: str = "the checkpoint") -> DictConfig:
    """The resolved config for these Hydra-style overrides; bad overrides raise L2LError.

    With `inherit` (the config saved in `source`, a checkpoint), its `groups` (their choices and every key, nulls
    included) are taken as they were saved; the command line may still change their keys, not their choices.
    """
    overrides = list(overrides or [])
    for o in overrides:
        if "=" not in o and not o.startswith("~"):
            raise L2LError(f"malformed override '{o}': write key=value, e.g. task=quadratic or train.unroll=20")
    try:
        sweeps = [o.input_line for o in OverridesParser.create().parse_overrides(overrides) if o.is_sweep_override()]
    except HydraException as e:
        raise L2LError(f"bad override: {one_line(e)}") from None
    hydra = [o for o in overrides if is_hydra(o)]
    if hydra:
        raise L2LError(f"{' '.join(hydra)} configures a multirun's launcher: add -m (l2l COMMAND -m ...)")
    if sweeps:
        raise L2LError(f"{' '.join(sweeps)} is a sweep: add -m to run one job per value (l2l COMMAND -m "
                       f"{' '.join(sweeps)} ...)")
    for o in overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        if key == "recipe.optimizer":
            raise L2LError(f"{o}: recipe.optimizer is what a recipe names for its task; choose the optimizer with "
                           "optimizer=NAME")
        many = key in MANY and value.startswith("[") and value.endswith("]")
        for choice in value[1:-1].split(",") if many else [value] if key in GROUPS and value else []:
            if choice.strip() not in group_choices(key):
                raise L2LError(f"unknown {key} '{choice.strip()}': choose one of {', '.join(group_choices(key))}"
                               + (" (or a list: logger=[tensorboard,mlflow])" if key in MANY else ""))
    try:
        cfg = _hydra(with_inherited(overrides, inherit, groups, source) if inherit is not None else overrides)
        OmegaConf.resolve(cfg)
    except MissingConfigException as e:
        raise L2LError(one_line(e)) from None
    except (HydraException, OmegaConfBaseException, ValueError) as e:
        msg = one_line(e)
        if "is not in struct" in str(e) or "Could not override" in msg:
            msg += " (no such key: `l2l COMMAND --help` lists the groups, conf/ every key)"
        raise L2LError(f"bad override: {msg}") from None
    OmegaConf.set_struct(cfg, True)
    return resumed(cfg, overrides) if OmegaConf.select(cfg, "train.resume") else cfg


# what a resumed run may change: how long it goes on, not what it does (its finished epochs stay the same run's)
BUDGET = ("train.max_epochs", "train.patience", "train.time_limit")


def resumed(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config a resumed run (train.resume) goes on with: its own, saved in its last.pt, with the budget
    (BUDGET) the command line gives; any other change is refused: it would make the run two runs in one."""
    check_values(OmegaConf.masked_copy(cfg, ["train"]))  # train.resume a path before it is read
    saved = copy.deepcopy(last_checkpoint(cfg.train.resume)["config"])
    OmegaConf.set_struct(saved, True)
    given = {o.key_or_group: o for o in OverridesParser.create().parse_overrides(overrides)}  # the last of each
    for key, o in given.items():
        if key == "train.resume":
            continue
        if key in BUDGET:
            OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
            continue
        # a group's choice by its name (logger's, whole: it has none)
        path = f"{key}.name" if key in GROUPS and OmegaConf.select(cfg, f"{key}.name") is not None else key
        if OmegaConf.select(cfg, path) != OmegaConf.select(saved, path):
            was = f"{key}={show(OmegaConf.select(saved, path))}"
            raise L2LError(f"{o.input_line}: a resumed run goes on with its own config ({was}); only "
                           f"its budget may change ({', '.join(BUDGET)}): drop it, or meta-train a new run "
                           "(--init-from RUN starts one from its weights)")
    saved.train.resume = cfg.train.resume
    return saved


def _hydra(overrides: list[str]) -> DictConfig:
    """Hydra's compose, in Hydra's two stages: the defaults tree from the group choices (task=mnist: YAML files,
    0.2 s, so cached), then every other override applied to it in struct mode, as Hydra applies them."""
    choices, keys = [], []
    for o in OverridesParser.create().parse_overrides(overrides):
        (choices if _chooses(o) else keys).append(o)
    cfg = copy.deepcopy(_tree(tuple(o.input_line for o in choices)))
    OmegaConf.set_struct(cfg, True)
    ConfigLoaderImpl._apply_overrides_to_config(keys, cfg)
    return cfg


@functools.lru_cache(maxsize=64)
def _tree(choices: tuple[str, ...]) -> DictConfig:
    # inside a multirun's job Hydra is initialized already (its launcher's config): set aside, then put back
    launcher = Singleton._instances.pop(GlobalHydra, None)
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=list(choices))
            # a recipe may name the optimizer it was measured with (recipe.optimizer); Hydra lets only the primary
            # config choose another group's option, so the choice is made here, where the command line names none
            wanted = recipe_optimizer(cfg, choices)
            return cfg if wanted in (None, cfg.optimizer.name) else hydra_compose(
                config_name="config", overrides=[*choices, f"optimizer={wanted}"])
    finally:
        if launcher is not None:
            Singleton._instances[GlobalHydra] = launcher


def recipe_optimizer(cfg: DictConfig, overrides) -> str | None:
    """The optimizer `cfg`'s recipe names for its task (recipe.optimizer), where `overrides` choose none."""
    names = any(_chooses(o) and o.key_or_group == "optimizer"
                for o in OverridesParser.create().parse_overrides(list(overrides)))
    return None if names else cfg.recipe.get("optimizer")


def _chooses(override) -> bool:
    """Hydra's own rule (defaults_list.Overrides): a group's key with a non-dict value chooses from the group;
    optimizer={key: value} only changes keys."""
    return override.key_or_group in _group_dirs() and not isinstance(override.value(), dict)


@functools.lru_cache(maxsize=1)
def _group_dirs() -> frozenset[str]:
    def walk(node, prefix=""):
        for p in node.iterdir():
            if p.is_dir() and not p.name.startswith("__"):
                yield prefix + p.name
                yield from walk(p, f"{prefix}{p.name}/")
    return frozenset(walk(importlib.resources.files(CONFIG_MODULE)))


def with_inherited(overrides: list[str], saved: DictConfig, groups: tuple[str, ...], source: str) -> list[str]:
    """The overrides that restore `groups` of a config saved in `source`, then `overrides` (see compose)."""
    try:
        return _inherited(saved, overrides, groups, source) + list(overrides)
    except HydraException as e:
        raise L2LError(f"bad override: {one_line(e)}") from None


# keys added since a checkpoint was saved, whose default is not what it trained with: {(group, key): (a key only
# configs that take it hold, the value such a config had before)}; NTMs updated from their controller until then,
# and learned optimizers saw no problem inputs (a recipe may turn them on: the weights would not fit)
SINCE = {("optimizer", "update_from"): ("read_heads", "controller"), ("optimizer", "problem_inputs"): ("hidden", False),
         ("task", "problem_inputs"): ("preprocess", False), ("optimizer", "nominal"): ("hidden", "null"),
         ("task", "nominal"): ("preprocess", "null")}


def _inherited(saved: DictConfig, overrides: list[str], groups: tuple[str, ...], source: str) -> list[str]:
    """Overrides that restore `groups` of a saved config; the data folder belongs to the machine, so it is not
    inherited."""
    for o in overrides:
        key, _, value = o.partition("=")
        if key in groups and value != saved[key].name:
            raise L2LError(f"{source} holds optimizer={saved.optimizer.name} trained on task={saved.task.name}; it "
                           f"cannot be used with {key}={value}")
    given = {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)}
    # a checkpoint evaluated with its task comes with its recipe too (its evaluation sizes); fine-tuning does not
    restored = (*groups, "recipe") if "task" in groups else groups
    choices = [f"{g}={saved[g].name}" for g in restored if g in saved and g not in given]
    # nulls too: a null saved where the current recipe has a value (groups) must stay null for the weights to fit
    keys = [f"{g}.{k}={quoted(v)}" for g in groups for k, v in saved[g].items()
            if f"{g}.{k}" not in given and not k.startswith("_") and k not in ("name", "root")]
    keys += [f"{g}.{k}={v}" for (g, k), (marker, v) in SINCE.items()
             if g in groups and marker in saved[g] and k not in saved[g] and f"{g}.{k}" not in given]
    return choices + keys


def quoted(v) -> str:
    """A saved config value in Hydra's override grammar: {name:['prefix',...]}, not Python's repr of a dict or list,
    which Hydra cannot parse."""
    if OmegaConf.is_dict(v):
        return "{" + ",".join(f"{k}:{quoted(x)}" for k, x in v.items()) + "}"
    if OmegaConf.is_list(v):
        return "[" + ",".join(quoted(x) for x in v) + "]"
    if v is None:
        return "null"
    if isinstance(v, str):  # quoted: a saved path may hold characters Hydra's grammar does not take bare (~, é, ' ')
        # Hydra unescapes backslashes only before a quote (or the closing one): double those, escape the quotes
        return "'" + re.sub(r"(\\*)('|$)", lambda m: 2 * m[1] + ("\\'" if m[2] else ""), v) + "'"
    return str(v)


def check(cfg: DictConfig, command: str) -> None:
    """Refuse, before any work, every value outside the schema and every combination that cannot work."""
    check_values(cfg)
    tasks = OmegaConf.select(cfg, "recipe.tasks")
    if tasks is not None and cfg.task.name not in tasks:
        raise L2LError(f"recipe={cfg.recipe.name} is for task={', '.join(tasks)}, not task={cfg.task.name}: use "
                       "recipe=best or recipe=paper")
    if is_learned(cfg.optimizer) and cfg.optimizer.get("gac", 0) > cfg.optimizer.hidden:
        raise L2LError(f"optimizer.gac={cfg.optimizer.gac} is more than optimizer.hidden={cfg.optimizer.hidden}: "
                       "averaging cells are a subset of each layer's cells")
    if cfg.optimizer.get("update_from") == "read" and cfg.optimizer.get("output", "linear") != "linear":
        raise L2LError(f"optimizer.output={cfg.optimizer.output} shapes a read-out that optimizer.update_from=read "
                       "does not use (the update is the memory's read): use optimizer.update_from=controller")
    if "read_heads" in cfg.optimizer and cfg.optimizer.get("preprocess") == "moments":
        raise L2LError("optimizer.preprocess=moments is for the LSTM optimizers (an NTM's reads go through its "
                       "preprocessing too): use preprocess none or log_sign with optimizer=" + cfg.optimizer.name)
    if "conv_layers" in cfg.task:  # each conv layer halves the image: at least one pixel must be left
        side = min(SHAPES[cfg.task.dataset][1:])
        if side >> cfg.task.conv_layers < 1:
            raise L2LError(f"task.conv_layers={cfg.task.conv_layers} is too deep for {side}x{side} images of "
                           f"{cfg.task.dataset}: each layer halves them; use at most {side.bit_length() - 1}")
    if command in ("meta-train", "experiment"):
        horizon, key = horizon_of(cfg), "train.horizon" if cfg.train.get("horizon") else "task.steps"
        if cfg.train.unroll > horizon:
            raise L2LError(f"train.unroll={cfg.train.unroll} is longer than the horizon {key}={horizon}: "
                           f"lower train.unroll or raise {key}")
        if not is_learned(cfg.optimizer):
            raise L2LError(f"optimizer={cfg.optimizer.name} has nothing to meta-train: use optimizer=lstm, lstm_gac, "
                           "ntm_bfgs or ntm_lbfgs (baselines are tuned with `l2l sweep-baselines`)")
        teacher = OmegaConf.select(cfg, "train.imitate.optimizer")
        if teacher is not None and teacher not in baselines():
            raise L2LError(f"train.imitate.optimizer={teacher} is not a baseline: choose from {', '.join(baselines())}")
        if teacher is not None and cfg.train.imitate.lr is None:
            raise L2LError(f"train.imitate.optimizer={teacher} needs its tuned learning rate: set train.imitate.lr "
                           f"(the best lr for {teacher} of `l2l sweep-baselines eval.split=validation`)")
    for key in ("task.nominal", "optimizer.nominal"):
        nominal = OmegaConf.select(cfg, key)
        if nominal is not None and nominal not in baselines():
            raise L2LError(f"{key}={nominal} is not a baseline: choose from {', '.join(baselines())}")
    nominal = OmegaConf.select(cfg, "optimizer.nominal")
    if nominal is not None and "read_heads" in cfg.optimizer:
        raise L2LError(f"optimizer.nominal is for the LSTM optimizers (an NTM's update is its memory's read): "
                       f"optimizer.nominal=null with optimizer={cfg.optimizer.name}")
    if command not in ("meta-train", "experiment") and OmegaConf.select(cfg, "train.resume"):
        raise L2LError(f"train.resume continues a meta-training run, not {command}: `l2l meta-train --resume RUN`")
    if command in ("sweep-baselines", "generalize", "experiment"):
        if cfg.sweep.lr_max < cfg.sweep.lr_min:
            raise L2LError(f"sweep.lr_max={cfg.sweep.lr_max} is below sweep.lr_min={cfg.sweep.lr_min}")
        for name in cfg.sweep.optimizers:
            if name not in baselines():
                raise L2LError(f"sweep.optimizers has '{name}', not a baseline: choose from {', '.join(baselines())}")


def horizon_of(cfg: DictConfig) -> int:
    """The optimizee steps of a meta-training trajectory and validation run: train.horizon, else the task's (runs
    saved before the key: the task's)."""
    return cfg.train.get("horizon") or cfg.task.steps


def baselines() -> list[str]:
    """The optimizer group's hand-designed options (what sweeps tune and imitation may follow)."""
    return [c for c in group_choices("optimizer") if not is_learned(_option("optimizer", c))]


def is_learned(node: DictConfig) -> bool:
    """Whether an optimizer config is a learned optimizer (weights to meta-train) rather than a baseline."""
    target = str(node.get("_target_", ""))
    return not MOVED.get(target, target).startswith(BASELINE_TARGETS)


def _option(group: str, name: str) -> DictConfig:
    return OmegaConf.create((importlib.resources.files(CONFIG_MODULE) / group / f"{name}.yaml").read_text())


def build(node: DictConfig, **kwargs):
    """The one way config becomes objects: `_target_` + hydra.utils.instantiate."""
    if node.get("_target_") in MOVED:  # a config saved by an older l2l
        node = OmegaConf.merge(node, {"_target_": MOVED[node._target_]})
    try:
        return instantiate(node, **kwargs, _convert_="all")
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, L2LError):  # an object that refused its own config says why in its own words
            raise cause from None
        if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
            key = str(cause).split("'")[-2]
            raise L2LError(f"{node.get('name', 'this')} takes no key '{key}': remove it") from None
        raise


def baseline_config(name: str, lr: float | None = None) -> DictConfig:
    """The config of one baseline optimizer, as `optimizer=<name>` would compose it."""
    node = _option("optimizer", name)
    if lr is not None:
        node.lr = float(lr)
    return node
