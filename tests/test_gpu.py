"""device=cuda end to end; skipped where torch sees no GPU."""

import pytest
import torch

from l2lcli.commands import evaluate, sweep, train

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("optimizer", ["lstm", "ntm_lbfgs"])
def test_cuda_meta_train_sweep_evaluate_agree_with_the_cpu(make_cfg, optimizer):
    """Meta-trained on the GPU, then evaluated with its baselines on the same problems on both devices."""
    r = train.run(make_cfg("device=cuda", f"optimizer={optimizer}"))
    s = sweep.run(make_cfg("device=cuda"))
    rows = {}
    for device in ("cuda", "cpu"):
        e = evaluate.run(make_cfg(f"device={device}", f"optimizer={optimizer}", f"eval.checkpoint={r['checkpoint']}",
                                  f"eval.baselines={s['run_dir']}"))
        rows[device] = {row["optimizer"]: row["final_loss"] for row in e["rows"]}
    assert rows["cuda"].keys() == rows["cpu"].keys() and len(rows["cpu"]) == 5
    for name, cpu in rows["cpu"].items():
        assert abs(rows["cuda"][name] - cpu) <= 1e-2 * abs(cpu), (name, rows)


def test_cuda_and_cpu_agree_on_the_same_problems(make_cfg):
    cpu = sweep.run(make_cfg("device=cpu"))["table"]
    gpu = sweep.run(make_cfg("device=cuda"))["table"]
    assert list(cpu["lr"]) == list(gpu["lr"])
    assert (abs(cpu["final_loss"] - gpu["final_loss"]) / cpu["final_loss"]).max() < 1e-3


def test_art_on_cuda_agrees_with_the_cpu(make_cfg):
    """The frozen feature network moves with the problems; cuDNN's TF32 convolutions allow a small difference."""
    small = ["task=art", "recipe=smoke", "task.size=16"]
    cpu = sweep.run(make_cfg("device=cpu", *small))["table"]
    gpu = sweep.run(make_cfg("device=cuda", *small))["table"]
    assert list(cpu["lr"]) == list(gpu["lr"])
    assert (abs(cpu["final_loss"] - gpu["final_loss"]) / cpu["final_loss"]).max() < 2e-2
