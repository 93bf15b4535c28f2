import configparser
import subprocess
import sys
import zipfile

import pytest
from omegaconf import OmegaConf

from l2lcli.config import L2LError, baseline_config, check, compose, group_choices


def test_defaults_compose_to_the_paper_quadratic():
    cfg = compose(["recipe=paper"])
    assert cfg.task.name == "quadratic" and cfg.task.dim == 10 and cfg.task.steps == 100
    assert cfg.optimizer.name == "lstm" and cfg.optimizer.hidden == 20 and cfg.optimizer.layers == 2
    assert cfg.train.unroll == 20 and cfg.train.meta_loss == "sum" and cfg.train.second_derivatives is False
    assert cfg.optimizer.preprocess == cfg.task.preprocess  # resolved interpolation


def test_group_choices_are_read_from_the_shipped_conf():
    assert {"sgd", "rmsprop", "adam", "nag", "lstm", "lstm_gac"} <= set(group_choices("optimizer"))
    assert {"cpu", "cuda", "auto"} == set(group_choices("device"))
    assert "quadratic" in group_choices("task")


@pytest.mark.parametrize("override, fragment", [
    ("task=nope", "unknown task 'nope': choose one of"),
    ("optimizer=lstmm", "unknown optimizer 'lstmm'"),
    ("train.unrol=5", "train.unrol"),
    ("justaword", "malformed override"),
    ("train.unroll=[", "bad override"),
    ("recipe.optimizer=lstm", "choose the optimizer with optimizer=NAME"),  # what the recipe names, not a choice
])
def test_bad_overrides_raise_one_clear_line(override, fragment):
    with pytest.raises(L2LError) as e:
        compose([override])
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("override, fragment", [
    ("task.steps=0", "task.steps=0 is invalid"),
    ("train.unroll=-1", "train.unroll=-1 is invalid"),
    ("train.unroll=200", "longer than the horizon"),
    ("train.meta_lr=0", "train.meta_lr=0"),
    ("train.meta_loss=max", "train.meta_loss=max is invalid"),
    ("eval.problems=0", "eval.problems=0"),
])
def test_check_rejects_meaningless_values(override, fragment):
    with pytest.raises(L2LError, match=fragment.replace("[", r"\[")):
        check(compose([override]), "meta-train")


def test_baseline_config_has_torch7_defaults():
    adam = baseline_config("adam", lr=0.5)
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps) == (0.5, 0.9, 0.999, 1e-8)
    assert baseline_config("nag").momentum == 0.9 and baseline_config("rmsprop").alpha == 0.99


def test_conf_ships_inside_the_wheel(tmp_path):
    """The configs must be found from an installed wheel, not only from a checkout."""
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(root)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("l2lcli-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("l2lcli/conf/config.yaml", "l2lcli/conf/task/quadratic.yaml", "l2lcli/conf/optimizer/lstm.yaml",
              "l2lcli/conf/device/cpu.yaml", "l2lcli/pretrained/quadratic.pt", "l2lcli/pretrained/quadratic.json"):
        assert f in names  # the configs, and the shipped rules with their cards
    # every subpackage ships: setup.cfg lists them by hand (checked on the list too, since a stale build/lib can
    # carry a package into the wheel that the list lacks)
    packages = {p.parent.relative_to(root).as_posix().replace("/", ".") for p in (root / "l2lcli").rglob("__init__.py")}
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    assert packages <= set(cfg["options"]["packages"].split()), packages - set(cfg["options"]["packages"].split())
    assert {f"{p.replace('.', '/')}/__init__.py" for p in packages} <= set(names)
    # and composing from the installed wheel alone works
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("from l2lcli.config import compose; from l2lcli.pretrained import names; "
            "print(compose(['task=quadratic']).task.name, names())")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert res.stdout.strip().startswith("quadratic [") and "'quadratic'" in res.stdout, res.stderr


def test_each_task_defaults_to_its_best_recipe_and_the_paper_is_one_override_away():
    best, paper = compose(["task=mnist"]), compose(["task=mnist", "recipe=paper"])
    assert best.recipe.name == "best" and paper.recipe.name == "paper"
    # MNIST's best measured recipe: one LSTM per layer (the task names the grouping), the relative meta-loss
    assert best.optimizer.groups == {"hidden": ["layer"], "out": ["out"]} and best.train.meta_loss == "relative"
    assert paper.optimizer.groups is None and paper.train.meta_loss == "sum"
    assert (paper.optimizer.p, paper.optimizer.output_scale, paper.task.hidden) == (10.0, 0.1, 20)
    # the command line wins over the recipe, and a task's grouping reaches every learned optimizer
    assert compose(["task=mnist", "train.meta_loss=sum"]).train.meta_loss == "sum"
    assert compose(["task=mnist", "optimizer=ntm_lbfgs"]).optimizer.groups == best.optimizer.groups
    assert best.optimizer.problem_inputs is True and paper.optimizer.problem_inputs is False
    # quadratics: the best recipe measured is LSTM+GAC with each problem's inputs and more patience
    q_best, q_paper = compose([]), compose(["recipe=paper"])
    assert (q_best.optimizer.name, q_best.optimizer.gac, q_paper.optimizer.name, q_paper.optimizer.gac) == (
        "lstm_gac", 2, "lstm", 0)
    assert q_best.optimizer.problem_inputs is True and q_paper.optimizer.problem_inputs is False
    assert (q_best.train.patience, q_paper.train.patience) == (20, 10)
    same = {k: v for k, v in q_best.items() if k not in ("recipe", "task", "optimizer", "train")}
    assert same == {k: v for k, v in q_paper.items() if k not in ("recipe", "task", "optimizer", "train")}


def test_the_long_recipe_is_the_best_one_meta_trained_on_twice_the_horizon():
    best, long = compose(["task=mnist"]), compose(["task=mnist", "recipe=long"])
    assert (long.train.horizon, long.task.steps, best.train.horizon) == (200, 100, None)  # evaluation keeps 100
    assert OmegaConf.to_container(long.task) == OmegaConf.to_container(best.task)
    assert {k: v for k, v in long.train.items() if k != "horizon"} == {
        k: v for k, v in best.train.items() if k != "horizon"}


def test_the_activations_recipe_is_the_best_one_on_the_training_net_with_three_activations():
    best, act = compose(["task=mnist"]), compose(["task=mnist", "recipe=activations"])
    assert OmegaConf.to_container(act.task.family) == {"layers": [1], "hidden": [20],
                                                       "activation": ["sigmoid", "relu", "tanh"]}
    assert (act.task.layers, act.task.hidden, act.task.activation) == (1, 20, "sigmoid")  # evaluation: the paper's net
    assert {k: v for k, v in act.task.items() if k != "family"} == {k: v for k, v in best.task.items() if k != "family"}
    assert (act.train.validation_batches, act.train.validation_problems, act.train.max_epochs) == (9, 8, 6)
    assert act.train.validation_batches % len(act.task.family.activation) == 0  # spread: each activation alike


def test_the_smoke_recipe_is_tiny_on_every_task():
    for task in group_choices("task"):
        cfg = compose([f"task={task}", "recipe=smoke"])
        assert cfg.task.steps <= 10 and cfg.train.max_epochs <= 2 and cfg.eval.problems <= 4
        assert cfg.sweep.lr_num == 2 and cfg.device.compile is False and cfg.train.time_limit is None


@pytest.mark.parametrize("overrides", [
    [], ["task=mnist"], ["task=mnist", "recipe=paper", "train.unroll=5", "seed=3"],
    ["optimizer=lstm_gac", "optimizer.gac=3", "task=quadratic"], ["train.unroll=7", "task=cifar", "recipe=smoke"],
    ["task=mnist", "recipe=family", "task.family={layers:[1,2]}"], ["optimizer.groups={solver:[theta]}"],
    ["logger=[tensorboard,mlflow]", "device=auto"], ["task=art", "task.features.weights=random", "~train.grad_clip"],
    ["optimizer=adam", "optimizer.lr=0.1", "optimizer=sgd"], ["eval.problems=8", "eval.problems=9"],
])
def test_compose_caches_the_defaults_tree_and_gives_what_hydra_gives(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    from l2lcli import config
    with initialize_config_module(config_module=config.CONFIG_MODULE, version_base="1.3"):
        plain = hydra_compose(config_name="config", overrides=overrides)
        wanted = config.recipe_optimizer(plain, overrides)  # tested on its own below
        plain = hydra_compose(config_name="config", overrides=[*overrides, f"optimizer={wanted}"]) if wanted else plain
    for _ in range(2):  # the second from the cache; a first call's changes must not leak into it
        cfg = config._hydra(overrides)
        assert OmegaConf.to_container(cfg) == OmegaConf.to_container(plain)
        assert OmegaConf.is_struct(cfg) == OmegaConf.is_struct(plain)
        cfg.seed = 12345


@pytest.mark.parametrize("overrides, name", [
    ([], "lstm_gac"), (["seed=3", "optimizer.hidden=5"], "lstm_gac"), (["optimizer=lstm"], "lstm"),
    (["optimizer=adam"], "adam"), (["optimizer=ntm_bfgs"], "ntm_bfgs"), (["recipe=paper"], "lstm"),
    (["recipe=smoke"], "lstm"), (["task=mnist"], "lstm"), (["task=mnist", "optimizer=lstm_gac"], "lstm_gac"),
    (["optimizer={hidden:8}"], "lstm_gac"),  # Hydra's rule: a dict for a group changes its keys, chooses nothing
])
def test_a_recipe_names_its_optimizer_and_the_command_line_wins(overrides, name):
    """recipe.optimizer (quadratics' best: lstm_gac) is the choice where the command line names none; the config is
    Hydra's for that choice, key for key."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    from l2lcli import config
    cfg = config._hydra(overrides)
    assert cfg.optimizer.name == name
    with initialize_config_module(config_module=config.CONFIG_MODULE, version_base="1.3"):
        plain = hydra_compose(config_name="config", overrides=[f"optimizer={name}", *overrides])
    assert OmegaConf.to_container(cfg) == OmegaConf.to_container(plain)
    # optimizer.KEY and optimizer={KEY: ...} do not choose the optimizer; only optimizer=NAME does
    for keys in (["optimizer.gac=0"], ["optimizer={gac:0}"]):
        assert config.recipe_optimizer(config._hydra([]), keys) == "lstm_gac"
    assert config.recipe_optimizer(config._hydra([]), ["optimizer=lstm"]) is None


def test_a_bad_key_is_refused_as_hydra_refuses_it():
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    from l2lcli import config
    for bad in (["train.unrol=5"], ["task=mnist", "task.nosuch=1"], ["+seed=2"]):
        with initialize_config_module(config_module=config.CONFIG_MODULE, version_base="1.3"):
            with pytest.raises(Exception) as plain:
                hydra_compose(config_name="config", overrides=bad)
        with pytest.raises(Exception) as ours:
            config._hydra(bad)
        assert type(ours.value) is type(plain.value) and str(ours.value) == str(plain.value)
