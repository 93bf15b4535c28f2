"""examples/ run as users run them, on tiny sizes: a plain PyTorch loop on a model the rule never saw, resumed."""

import importlib.util
from pathlib import Path

import torch

from l2lcli.commands import train
from tests.test_mnist import MNIST_TINY

EXAMPLES = Path(__file__).parents[1] / "examples"


def example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_a_plain_loop_stopped_and_resumed_gives_the_numbers_of_one_run(make_cfg, tmp_path, capsys):
    main = example("train_any_model")
    ckpt = train.run(make_cfg(*MNIST_TINY))["checkpoint"]  # a rule meta-trained on MLPs; the example's is a conv net
    args = ["--checkpoint", ckpt, "--model", "conv", "--batch", "16", "--every", "1"]  # batch norm: buffers too
    one = main([*args, "--steps", "6"])
    half = tmp_path / "half.pt"
    first = main([*args, "--steps", "3", "--save", str(half)])
    rest = main([*args, "--steps", "6", "--resume", str(half)])
    assert {**first["losses"], **rest["losses"]} == one["losses"]
    assert all(torch.equal(a, b) for a, b in zip(one["model"].state_dict().values(),
                                                 rest["model"].state_dict().values(), strict=True))
    assert "step 6: loss" in capsys.readouterr().out


def test_the_shipped_mnist_rule_trains_an_mlp_it_never_saw():
    r = example("train_any_model")(["--steps", "40", "--batch", "32", "--every", "40"])
    losses = list(r["losses"].values())
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:5]) / 5  # from ~2.3 (chance): it learns
