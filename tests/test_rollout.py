"""Step costs are honest: the first step (compiling, first allocations) is timed apart from the warm steps."""

import time

from l2lcli.config import baseline_config, build
from l2lcli.rollout import rollout


class SlowFirstStep:
    """ADAM whose first step costs 0.3 s more, as compiling the learned optimizer's cells does."""

    learned = False

    def __init__(self, adam):
        self.adam, self.calls = adam, 0

    def init_state(self, params, kinds=None):
        return self.adam.init_state(params, kinds)

    def step(self, params, grads, state):
        self.calls += 1
        if self.calls == 1:
            time.sleep(0.3)
        return self.adam.step(params, grads, state)


def test_the_first_step_is_timed_apart_from_the_warm_steps(make_cfg):
    cfg = make_cfg()
    problems = build(cfg.task).sample("test", 8, seed=0)
    r = rollout(problems, SlowFirstStep(build(baseline_config("adam", 0.1))), 20)
    assert r.first_seconds >= 0.3 and r.seconds < 0.3 / 20  # warm steps: the 0.3 s is not spread over them
    assert r.curve.shape == (21, 8)
