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
    args = ["--checkpoint", ckpt, "--batch", "16", "--every", "1"]
    one = main([*args, "--steps", "6"])
    half = tmp_path / "half.pt"
    first = main([*args, "--steps", "3", "--save", str(half)])
    rest = main([*args, "--steps", "6", "--resume", str(half)])
    assert {**first["losses"], **rest["losses"]} == one["losses"]
    assert all(torch.equal(a, b) for a, b in zip(one["model"].state_dict().values(),
                                                 rest["model"].state_dict().values(), strict=True))
    assert "step 6: loss" in capsys.readouterr().out

