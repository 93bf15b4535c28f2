"""experiment: the main job in one call: meta-train, sweep the baselines, evaluate both on the same problems."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from ..config import check
from . import evaluate, sweep, train


def run(cfg: DictConfig) -> dict:
    """meta-train -> sweep-baselines -> evaluate --checkpoint --baselines; the three results by command name."""
    check(cfg, "experiment")  # refuse bad values before the first of the three runs
    trained = train.run(cfg)
    if trained["stop_reason"] == "interrupted":  # Ctrl-C stops the whole job, not only its first part
        return {"meta-train": trained}
    swept = sweep.run(cfg)
    evaluation = OmegaConf.create(OmegaConf.to_container(cfg))
    with open_dict(evaluation):
        evaluation.eval.checkpoint, evaluation.eval.baselines = trained["checkpoint"], swept["run_dir"]
    return {"meta-train": trained, "sweep-baselines": swept, "evaluate": evaluate.run(evaluation)}
