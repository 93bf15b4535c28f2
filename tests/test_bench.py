"""The speed benchmark's reference must compute what l2l computes, or its speed-up means nothing."""

from l2lcli.config import build
from tests.conftest import load_benchmark

bench = load_benchmark("bench")


def test_reference_meta_gradient_equals_l2ls(make_cfg):
    cfg = make_cfg("recipe=paper")  # the reference is the paper's LSTM (no problem inputs)
    assert bench.same_meta_gradient(cfg, build(cfg.task), 3, 10) < 1e-4


def test_reference_breaks_when_the_optimizer_differs(make_cfg, monkeypatch):
    """The check can fail: a reference with another output scale gives another meta-gradient."""
    cfg = make_cfg("recipe=paper")
    task = build(cfg.task)
    original = bench.RowMajorLSTM.step

    def scaled(self, params, grads, state):
        return original(self, params, {k: 2 * g for k, g in grads.items()}, state)

    monkeypatch.setattr(bench.RowMajorLSTM, "step", scaled)
    assert bench.same_meta_gradient(cfg, task, 3, 10) > 1e-2


def test_reference_meta_gradient_equals_l2ls_on_conv_nets_with_two_lstms(make_cfg, tmp_path):
    from tests.test_cifar import _batches, write_binary

    write_binary(tmp_path, _batches())
    cfg = make_cfg("task=cifar", "recipe=paper", f"data.root={tmp_path}", "task.channels=2", "task.fc_units=4",
                   "task.minibatch=4")  # the reference sums the losses: the paper's meta-loss
    assert set(build(cfg.optimizer).nets) == {"conv", "fc"}
    assert bench.same_meta_gradient(cfg, build(cfg.task), 2, 4) < 1e-4


def test_reference_meta_gradient_equals_l2ls_on_art(make_cfg):
    cfg = make_cfg("task=art", "recipe=paper", "task.size=16", "task.features.content_layer=relu1_2",
                   "task.features.style_layers=[relu1_1]")
    assert bench.same_meta_gradient(cfg, build(cfg.task), 2, 4) < 1e-4
