"""examples/ run as users run them, on tiny sizes: a plain PyTorch loop on a model the rule never saw, resumed."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from l2lcli.commands import train
from tests.conftest import load_benchmark
from tests.test_mnist import MNIST_TINY

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "examples"


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


def test_the_unseen_data_benchmark_tunes_baselines_on_other_seeds_and_compares(capsys, tmp_path, monkeypatch):
    """benchmarks/unseen.py: baselines take the best grid learning rate on tuning seeds; the learned rule and
    the tuned baselines run on the test seeds, never a tuning one; the ratio is the learned mean over the best
    baseline's."""
    unseen = load_benchmark("unseen")
    seeds, train = [], unseen.train

    def recorded(make_opt, seed, data, args):
        seeds.append((make_opt, seed))
        return train(make_opt, seed, data, args)

    monkeypatch.setattr(unseen, "train", recorded)
    out = unseen.main(["--checkpoint", str(ROOT / "l2lcli" / "pretrained" / "mnist.pt"), "--dataset", "mnist",
                       "--root", str(tmp_path), "--steps", "4", "--lrs", "3", "--tune-seeds", "2",
                       "--test-seeds", "3"])
    tuning, testing = {s for _, s in seeds[: 4 * 3 * 2]}, {s for _, s in seeds[4 * 3 * 2 :]}
    assert len(tuning) == 2 and testing == {0, 1, 2} and not tuning & testing
    assert len(seeds) == 4 * 3 * 2 + 5 * 3  # 4 baselines x 3 lrs x 2 tuning seeds; 5 optimizers x 3 test seeds
    best = out["best"]
    assert set(out["finals"]) == {"sgd", "nag", "rmsprop", "adam", "learned"}
    assert all(len(f) == 3 for f in out["finals"].values())
    assert np.mean(out["finals"][best]) == min(np.mean(f) for n, f in out["finals"].items() if n != "learned")
    assert out["ratio"] == pytest.approx(np.mean(out["finals"]["learned"]) / np.mean(out["finals"][best]))
    assert out["low"] <= out["ratio"] <= out["high"]
    assert "learned / best tuned" in capsys.readouterr().out
