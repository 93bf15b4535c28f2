import importlib.util
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from l2lcli.config import compose

# Small enough for the default suite: a few seconds per meta-training run on 2 cores.
TINY = ["train.batch_size=16", "train.epoch_trajectories=3", "train.max_epochs=2", "train.validation_problems=32",
        "eval.problems=32", "task.steps=20", "train.unroll=5", "sweep.lr_num=5",
        "device.compile=false"]  # compiled cells have their own test (test_learned); compiling costs seconds
# train_log.csv's wall-clock columns: the only ones that differ between two runs of the same seed and config
TIMES = ["seconds", "epoch_seconds", "optimizee_steps_per_second"]


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the real config from conf/ with overrides, writing runs under tmp_path."""

    def make(*overrides, tiny=True):
        return compose([f"out_dir={tmp_path / 'outputs'}", *(TINY if tiny else []), *overrides])

    yield make
    GlobalHydra.instance().clear()


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (they are scripts to run, not a package to import)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", Path(__file__).parents[1] / "benchmarks"
                                                  / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
