"""Slow: the learned optimizer must really learn. `make test-slow`."""

import pytest

from l2lcli.commands import evaluate, sweep, train


@pytest.mark.slow
def test_a_short_default_meta_training_beats_every_tuned_baseline_on_quadratics(make_cfg):
    """Eight epochs of the default recipe (about a minute here); make run's full budget reaches 0.48x."""
    trained = train.run(make_cfg("train.max_epochs=8", tiny=False))
    swept = sweep.run(make_cfg(tiny=False))
    e = evaluate.run(make_cfg(f"eval.checkpoint={trained['checkpoint']}", f"eval.baselines={swept['run_dir']}",
                              tiny=False))
    learned = e["table"].iloc[0]
    assert learned["optimizer"] == "lstm" and learned["ratio_to_best_baseline"] < 0.8
