"""experiment: the main job in one call: meta-train, sweep the baselines, evaluate both on the same problems."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from ..config import check
from ..distributed import only_meta_train
from ..loggers import open_loggers
from . import evaluate, sweep, train


def run(cfg: DictConfig) -> dict:
    """meta-train -> sweep-baselines -> evaluate --checkpoint --baselines; the three results by command name.

    With a logger, the job is one parent run (MLflow: experiment/<task>) with the three commands' runs under it.
    """
    check(cfg, "experiment")  # refuse bad values before the first of the three runs
    only_meta_train("experiment")
    parent = open_loggers(cfg, "experiment")
    with parent.start(None), parent.nest():
        trained = train.run(cfg)
        if trained["stop_reason"] == "interrupted":  # Ctrl-C stops the whole job, not only its first part
            parent.finish("KILLED")
            return {"meta-train": trained}
        swept = sweep.run(cfg)
        evaluation = OmegaConf.create(OmegaConf.to_container(cfg))
        with open_dict(evaluation):
            evaluation.eval.checkpoint, evaluation.eval.baselines = trained["checkpoint"], swept["run_dir"]
        evaluated = evaluate.run(evaluation)
        parent.send_table("summary.csv", evaluated["table"])  # the job's headline figures on the parent run too
    return {"meta-train": trained, "sweep-baselines": swept, "evaluate": evaluated, "loggers": parent.report()}
