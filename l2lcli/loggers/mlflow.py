"""logger=mlflow: one MLflow run per command run, in a local store under out_dir or on any tracking server."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import time
from pathlib import Path

from omegaconf import DictConfig

from ..errors import L2LError, one_line
from .base import PARENT, Backend, RunInfo
from .series import Point, text

BATCH_METRICS, BATCH_PARAMS, PARAM_LENGTH = 1000, 100, 6000  # MLflow's limits per log_batch call and per value
# what the first line of MLflow's message buries under "API request to ... failed with exception HTTPConnectionPool..."
CAUSES = ("Connection refused", "Name or service not known", "Temporary failure in name resolution", "timed out",
          "No route to host")


def why(e: BaseException) -> str:
    """The cause of a failed MLflow call, short."""
    return next((c.lower() for c in CAUSES if c in str(e)), one_line(e)[:160])


class MLflow(Backend):
    name = "mlflow"

    def __init__(self, cfg: DictConfig, node: DictConfig, command: str, experiment: str | None = None):
        """Reach the tracking store and find (or create) the experiment now: a server that cannot be reached stops
        the command before any work."""
        if importlib.util.find_spec("mlflow") is None:
            raise L2LError("logger=mlflow needs MLflow: pip install 'l2lcli[mlflow]'")
        try:
            from mlflow import MlflowClient
        except Exception as e:  # a broken install: one line now, not a traceback
            raise L2LError(f"logger=mlflow cannot load MLflow ({one_line(e)[:120]}): pip install --upgrade "
                           "'l2lcli[mlflow]'") from None

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not "Creating initial MLflow database tables..."
        # MLflow reads these on each request; its defaults (7 retries with back-off, 120 s) make a lost server
        # cost minutes of a run
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(node.retries)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(node.timeout)
        out = Path(cfg.out_dir).resolve()
        self.local = not (node.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        # the local default is SQLite: MLflow 3 refuses its old ./mlruns file store
        self.uri = node.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{out / 'mlflow.db'}"
        parent = (PARENT.get() or {}).get(self.name)
        self.experiment = (parent["experiment"] if parent else
                           node.experiment or experiment or f"{command}/{cfg.task.name}")
        self.log_checkpoint, self.run_id = node.log_checkpoint, None
        try:
            if self.local:
                out.mkdir(parents=True, exist_ok=True)
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment(out / "mlartifacts")
        except L2LError:
            raise
        except Exception as e:  # whatever MLflow raises for a store it cannot reach or read
            raise L2LError(f"MLflow tracking at '{self.uri}' cannot be reached ({why(e)}): start the "
                           "server, fix logger.mlflow.tracking_uri (or $MLFLOW_TRACKING_URI), or drop logger=mlflow"
                           ) from None

    def _experiment(self, artifacts: Path) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            try:  # a local store keeps artifacts beside it, under out_dir; a server decides for itself
                return self.client.create_experiment(self.experiment,
                                                     artifact_location=artifacts.as_uri() if self.local else None)
            except MlflowException as e:  # another job created it a moment ago
                if e.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                found = self.client.get_experiment_by_name(self.experiment)
        if found.lifecycle_stage == "deleted":
            raise L2LError(f"MLflow experiment '{self.experiment}' is deleted: restore it (mlflow experiments restore "
                           f"--experiment-id {found.experiment_id}) or set logger.mlflow.experiment=NAME")
        return found.experiment_id

    def start(self, info: RunInfo, saved: dict | None) -> dict:
        from mlflow.entities import Param
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        if saved and saved.get("tracking_uri") == self.uri and self._exists(saved.get("run_id")):
            self.run_id = saved["run_id"]  # a resumed meta-train run goes on in the same MLflow run
            self.client.update_run(self.run_id, status="RUNNING")
            return {**saved, "continued": True}
        tags = {**info.tags, "mlflow.source.name": f"l2l {info.command}", "mlflow.source.type": "LOCAL"}
        if self.name in info.parents:
            tags[MLFLOW_PARENT_RUN_ID] = info.parents[self.name]["run_id"]
        self.run_id = self.client.create_run(self.experiment_id, run_name=info.name, tags=tags).info.run_id
        params = [Param(k, text(v)[:PARAM_LENGTH]) for k, v in info.params.items()]
        for i in range(0, len(params), BATCH_PARAMS):
            self.client.log_batch(self.run_id, params=params[i:i + BATCH_PARAMS])
        self._dataset(info)
        return {"tracking_uri": self.uri, **self.handle()}

    def _exists(self, run_id) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return bool(run_id) and self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def _dataset(self, info: RunInfo) -> None:
        """The data the run used, in MLflow's "Datasets used" column: its name, source and the facts l2l records."""
        from mlflow.entities import Dataset, DatasetInput

        facts = {k.removeprefix("data."): v for k, v in info.tags.items() if k.startswith("data.")}
        if not facts:
            return
        profile = json.dumps(facts, sort_keys=True)
        dataset = Dataset(name=info.params.get("task.dataset") or info.task,
                          digest=hashlib.sha256(profile.encode()).hexdigest()[:8], source_type="l2l",
                          source=json.dumps({"source": facts.get("source", "none")}), profile=profile)
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset)])

    def log(self, batch: list[Point]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(p.key, p.value, now, p.step) for p in batch]
        for i in range(0, len(metrics), BATCH_METRICS):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH_METRICS])

    def files(self, paths: list[Path], checkpoints: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(self.run_id, str(path))
        for path in checkpoints if self.log_checkpoint else []:
            self.client.log_artifact(self.run_id, str(path), "checkpoints")

    def finish(self, status: str, summary: list[Point], params: dict) -> None:
        self.log(summary)
        self.client.set_terminated(self.run_id, status)

    why = staticmethod(why)

    def close(self) -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, "FAILED")

    def handle(self) -> dict:
        return {"experiment": self.experiment, "experiment_id": self.experiment_id, "run_id": self.run_id}

    def where(self) -> str:
        hint = f"; mlflow ui --backend-store-uri {self.uri}" if self.local else ""
        return f"run {self.run_id} in experiment '{self.experiment}' at {self.uri}{hint}"
