"""log: send a run folder that exists to the loggers: runs made without them, or whose tracking server went away."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from ..errors import L2LError, one_line
from ..loggers import open_loggers
from ..loggers.base import RECORD, read_json


def folder_config(cfg: DictConfig, run: str, out_dir_given: bool) -> DictConfig:
    """The run's own saved config with this command's loggers (and out_dir, where given: the local MLflow store)."""
    run_dir = Path(run).resolve()
    if not (run_dir / "config.yaml").is_file():
        raise L2LError(f"'{run}' is not a run folder (no config.yaml in it): pass a folder under outputs/<command>/"
                       "<task>/")
    try:
        saved = OmegaConf.load(run_dir / "config.yaml")
    except Exception as e:  # YAML's and OmegaConf's errors alike
        raise L2LError(f"cannot read '{run_dir / 'config.yaml'}' ({one_line(e)[:100]})") from None
    with open_dict(saved):
        saved.logger = cfg.logger
        saved.out_dir = cfg.out_dir if out_dir_given else saved.get("out_dir", cfg.out_dir)
    return saved


def run(cfg: DictConfig, run: str, out_dir_given: bool = False) -> dict:
    """Send run folder `run` (its CSVs' figures, summary, config, files) to the loggers cfg.logger chooses."""
    if not cfg.logger:
        raise L2LError("choose where to send the run: logger=tensorboard, logger=mlflow or logger=many")
    run_dir = Path(run).resolve()
    saved = folder_config(cfg, run, out_dir_given)
    summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    # the folder's place says its command where no summary does (a run killed before its end)
    command = summary.get("command") or run_dir.parent.parent.name
    record = read_json(run_dir / RECORD) if (run_dir / RECORD).is_file() else {}
    events = run_dir / "tensorboard"
    if "tensorboard" in saved.logger and not saved.logger.tensorboard.dir and events.is_dir() \
            and "tensorboard" not in record:
        raise L2LError(f"'{run}' has TensorBoard event files that its loggers.json does not account for ({events}): "
                       "delete that folder to send the run again")
    log = open_loggers(saved, command, summary.get("data") or {})
    with log.start(run_dir, resumed=True):  # each logger's recorded run gets the rows it lacks; others, all of them
        log.finish("FINISHED" if summary else "KILLED")
    return {"command": "log", "run_dir": str(run_dir), "sent_as": command, "finished": bool(summary),
            "loggers": log.report()}
