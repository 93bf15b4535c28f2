import pytest
import torch

from l2lcli.config import build
from l2lcli.tasks.base import problem_rng


def test_quadratic_loss_is_the_paper_formula(make_cfg):
    task = build(make_cfg().task)
    p = task.sample("train", 4, seed=0)
    theta = torch.randn(4, 10)
    expected = torch.stack([((p.W[b] @ theta[b] - p.y[b]) ** 2).sum() for b in range(4)])
    torch.testing.assert_close(p.loss({"theta": theta}, 0), expected)


def test_replicas_are_laid_out_replica_major(make_cfg):
    task = build(make_cfg().task)
    p = task.sample("test", 3, seed=0)
    theta = torch.randn(2 * 3, 10)
    both = p.loss({"theta": theta}, 0)
    torch.testing.assert_close(both[3:], p.loss({"theta": theta[3:]}, 0))


def test_sampling_is_seeded_and_splits_are_disjoint(make_cfg):
    task = build(make_cfg().task)
    a, b = task.sample("test", 8, seed=0), task.sample("test", 8, seed=0)
    assert torch.equal(a.W, b.W) and torch.equal(a.theta0, b.theta0)
    others = [task.sample("train", 8, seed=0, index=0), task.sample("validation", 8, seed=0),
              task.sample("test", 8, seed=1)]
    assert all(not torch.equal(a.W, o.W) for o in others)
    # big seeds and indices stay distinct (torch.manual_seed alone would keep only their low 32 bits)
    draws = {problem_rng(s, seed, i).integers(2**62) for s in ("train", "validation", "test")
             for seed in (0, 2**32) for i in (0, 1, 2**32)}
    assert len(draws) == 18


def test_problem_rng_refuses_bad_keys():
    with pytest.raises(ValueError):
        problem_rng("train", -1)
    with pytest.raises(ValueError):
        problem_rng("holdout", 0)


def test_uniform_variant_matches_the_official_code(make_cfg):
    p = build(make_cfg("task.distribution=uniform").task).sample("train", 64, seed=0)
    assert p.W.min() >= 0 and p.W.max() < 1 and p.y.min() >= 0
    assert p.theta0.std() < 0.05
