import pandas as pd

from l2lcli.commands import sweep
from l2lcli.config import baseline_config, build
from l2lcli.rollout import rollout


def test_one_best_row_per_optimizer_never_a_diverged_one():
    a = pd.DataFrame({"optimizer": "sgd", "lr": [0.1, 0.2, 0.4], "final_loss": [3.0, 1.0, float("nan")],
                      "diverged": [False, False, True]})
    b = pd.DataFrame({"optimizer": "adam", "lr": [0.1, 0.2, 0.4], "final_loss": [0.5, 2.0, 0.1],
                      "diverged": [False, False, True]})
    best = sweep.best_rows(pd.concat([a, b]))  # duplicate index labels, as a plain concat gives
    assert list(best["optimizer"]) == ["sgd", "adam"] and list(best["lr"]) == [0.2, 0.1]


def test_all_learning_rates_at_once_equal_one_at_a_time(make_cfg):
    cfg = make_cfg()
    problems = build(cfg.task).sample("test", 8, seed=0)
    lrs = [0.001, 0.01, 0.1]
    table = sweep.sweep_baseline("adam", lrs, problems, 20)
    for lr, got in zip(lrs, table["final_loss"], strict=True):
        alone = rollout(problems, build(baseline_config("adam", lr)), 20)[0][-1].double().mean().item()
        assert abs(got - alone) <= 1e-5 * abs(alone)


def test_divergence_is_recorded_not_dropped(make_cfg):
    cfg = make_cfg()
    problems = build(cfg.task).sample("test", 16, seed=0)
    table = sweep.sweep_baseline("sgd", [1e-3, 10.0], problems, 20)
    assert list(table["diverged"]) == [False, True] and table["diverged_fraction"].iloc[1] > 0
    assert len(sweep.best_rows(table)) == 1 and sweep.best_rows(table)["lr"].iloc[0] == 1e-3
