"""logger=tensorboard | mlflow | many: what each run's folder holds, read back with the libraries' own readers."""

import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from l2lcli.commands import experiment, train
from l2lcli.commands import log as log_command
from l2lcli.config import compose
from l2lcli.errors import L2LError
from l2lcli.loggers import mlflow as mlflow_logger
from l2lcli.runs import code_version
from l2lcli.schema import leaves
from tests.conftest import TINY
from tests.test_cli import l2l, one_line_error

pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")
from mlflow import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from tests.conftest import load_benchmark  # noqa: E402


def store(out: Path) -> MlflowClient:
    """The default local MLflow store of runs under `out`."""
    return MlflowClient(f"sqlite:///{out.resolve()}/mlflow.db")


def scalars(events: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series in a TensorBoard log folder, as TensorBoard itself reads it."""
    acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def mlflow_run(run_dir) -> str:
    return json.loads((Path(run_dir) / "loggers.json").read_text())["mlflow"]["run_id"]


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """`l2l experiment logger=many` at tiny sizes: a meta-train, a sweep and an evaluate run under one parent."""
    out = tmp_path_factory.mktemp("job") / "outputs"
    cfg = compose([f"out_dir={out}", *TINY, "logger=many", "logger.mlflow.log_checkpoint=true"])
    return out, cfg, experiment.run(cfg)


def test_tensorboard_shows_the_train_log_figures(job):
    out, cfg, r = job
    run = Path(r["meta-train"]["run_dir"])
    assert r["meta-train"]["loggers"]["tensorboard"].startswith(str(run / "tensorboard"))
    log, tb = pd.read_csv(run / "train_log.csv"), scalars(run / "tensorboard")
    for column in ("meta_loss", "val_loss", "best_val_loss", "meta_lr", "epoch_seconds", "optimizee_steps_per_second"):
        steps, values = zip(*tb[f"train/{column}"], strict=True)
        assert list(steps) == log["epoch"].tolist()
        assert values == pytest.approx(log[column].tolist(), rel=1e-6)  # TensorBoard keeps float32
    assert tb["summary/best_epoch"] == [(0, r["meta-train"]["best_epoch"])]
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    hparams = acc.PluginTagToContent("hparams")  # the config in the HParams tab
    start = next(v for k, v in hparams.items() if "session_start" in k)
    assert b"train.unroll" in start and b"task.name" in start
    assert "config/text_summary" in acc.Tags()["tensors"]


def test_tensorboard_shows_evaluate_curves_and_its_pngs(job):
    out, cfg, r = job
    run = Path(r["evaluate"]["run_dir"])
    curves, tb = pd.read_csv(run / "curves.csv"), scalars(run / "tensorboard")
    for name, c in curves.groupby("optimizer"):
        steps, values = zip(*tb[f"curve/{name}/mean_loss"], strict=True)
        assert list(steps) == c["step"].tolist() and values == pytest.approx(c["mean_loss"].tolist(), rel=1e-6)
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    assert "curves" in acc.Tags()["images"]


def test_mlflow_runs_hold_the_csv_figures_params_tags_and_artifacts(job):
    out, cfg, r = job
    client = store(out)
    for command in ("meta-train", "sweep-baselines", "evaluate"):
        run = client.get_run(mlflow_run(r[command]["run_dir"]))
        assert run.info.status == "FINISHED"
        assert run.data.tags["l2l.code_version"] == code_version()
        assert run.data.tags["data.source"] == "generated" and run.data.tags["l2l.command"] == command
        assert run.inputs.dataset_inputs[0].dataset.name == "quadratic"
        flat = dict(leaves(OmegaConf.load(Path(r[command]["run_dir"]) / "config.yaml")))
        assert set(run.data.params) == set(flat)  # the whole resolved config, as dotted keys
        assert run.data.params["train.unroll"] == str(cfg.train.unroll)
        assert run.data.params["eval.steps"] == "null" and run.data.params["train.second_derivatives"] == "false"
    trained = client.get_run(mlflow_run(r["meta-train"]["run_dir"]))
    log = pd.read_csv(Path(r["meta-train"]["run_dir"]) / "train_log.csv")
    assert history(client, trained.info.run_id, "train/val_loss") == list(zip(log["epoch"], log["val_loss"],
                                                                                strict=True))
    assert trained.data.metrics["summary/best_val_loss"] == r["meta-train"]["best_val_loss"]
    artifacts = {a.path for a in client.list_artifacts(trained.info.run_id)}
    assert {"train_log.csv", "summary.json", "config.yaml", "checkpoints"} <= artifacts  # log_checkpoint=true
    assert {a.path for a in client.list_artifacts(trained.info.run_id, "checkpoints")} == {"checkpoints/best.pt",
                                                                                          "checkpoints/last.pt"}


def test_mlflow_sweep_and_evaluate_figures_equal_their_csvs(job):
    out, cfg, r = job
    client = store(out)
    swept = mlflow_run(r["sweep-baselines"]["run_dir"])
    sweep = pd.read_csv(Path(r["sweep-baselines"]["run_dir"]) / "sweep.csv")
    for name, rows in sweep.groupby("optimizer", sort=False):  # one point per learning rate, in the grid's order
        assert history(client, swept, f"sweep/{name}/lr") == list(enumerate(rows["lr"]))
        finite = [(i, v) for i, v in enumerate(rows["final_loss"]) if math.isfinite(v)]  # a diverged lr: CSV only
        assert history(client, swept, f"sweep/{name}/final_loss") == finite
    evaluated = mlflow_run(r["evaluate"]["run_dir"])
    curves = pd.read_csv(Path(r["evaluate"]["run_dir"]) / "curves.csv")
    summary = pd.read_csv(Path(r["evaluate"]["run_dir"]) / "summary.csv")
    for row in summary.itertuples():
        c = curves[curves["optimizer"] == row.optimizer]
        assert history(client, evaluated, f"curve/{row.optimizer}/mean_loss") == list(zip(c["step"], c["mean_loss"],
                                                                                          strict=True))
        metrics = client.get_run(evaluated).data.metrics
        assert metrics[f"final/{row.optimizer}/ratio_to_best_baseline"] == row.ratio_to_best_baseline
    artifacts = {a.path for a in client.list_artifacts(evaluated)}
    assert {"curves.csv", "curves.png", "summary.csv", "finals.csv", "summary.json", "config.yaml"} <= artifacts


def test_experiment_is_one_parent_run_with_a_child_per_command(job):
    out, cfg, r = job
    client = store(out)
    parent_experiment = client.get_experiment_by_name("experiment/quadratic")
    [parent] = client.search_runs([parent_experiment.experiment_id], "tags.`l2l.command` = 'experiment'")
    children = client.search_runs([parent_experiment.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["l2l.command"] for c in children) == ["evaluate", "meta-train", "sweep-baselines"]
    summary = pd.read_csv(Path(r["evaluate"]["run_dir"]) / "summary.csv")
    headline = f"final/{summary.loc[0, 'optimizer']}/final_loss"
    assert parent.data.metrics[headline] == summary.loc[0, "final_loss"]  # the headline on top
    assert parent.info.status == "FINISHED"


def test_logger_list_selection_and_bad_choices():
    assert compose(["logger=[tensorboard,mlflow]"]).logger == compose(["logger=many"]).logger
    assert set(compose(["logger=[mlflow]"]).logger) == {"mlflow"} and not compose([]).logger
    with pytest.raises(L2LError, match="unknown logger 'wandb'.*logger=\\[tensorboard,mlflow\\]"):
        compose(["logger=[tensorboard,wandb]"])
    with pytest.raises(L2LError, match="unknown task"):
        compose(["task=[mnist,cifar]"])  # only the logger group takes a list


@pytest.mark.parametrize("name", ["tensorboard", "mlflow"])
def test_a_logger_without_its_extra_is_one_line_before_any_work(tmp_path, monkeypatch, name):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == name else real(n, *a))
    res = l2l("meta-train", f"logger={name}", out=tmp_path / "out")
    one_line_error(res, f"pip install 'l2lcli[{name}]'")
    assert not (tmp_path / "out" / "meta-train").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_tracking_server_stops_the_run_at_its_start(tmp_path):
    started = time.perf_counter()
    res = l2l("meta-train", "logger=mlflow", f"logger.mlflow.tracking_uri=http://127.0.0.1:{free_port()}",
              "logger.mlflow.retries=0", out=tmp_path / "out")
    one_line_error(res, "cannot be reached (connection refused)")
    assert not (tmp_path / "out" / "meta-train").exists() and time.perf_counter() - started < 30


def test_a_logger_that_fails_mid_run_costs_nothing_and_the_folder_can_be_sent_again(make_cfg, monkeypatch, capsys):
    calls = []

    def flaky(self, batch):  # the server goes away after the first epoch's figures
        calls.append(len(batch))
        if len(calls) > 1:
            raise ConnectionError("tracking server went away")
        return real(self, batch)

    real = mlflow_logger.MLflow.log
    monkeypatch.setattr(mlflow_logger.MLflow, "log", flaky)
    cfg = make_cfg("logger=many", "train.max_epochs=3")
    r = train.run(cfg)
    run = Path(r["run_dir"])
    assert r["loggers"]["mlflow"] == "failed: logging train_log.csv: tracking server went away"
    assert "the run folder" in capsys.readouterr().err  # and says how to send it again
    log = pd.read_csv(run / "train_log.csv")
    assert len(log) == 3 and (run / "best.pt").is_file()  # nothing of the run is lost
    assert [s for s, _ in scalars(run / "tensorboard")["train/val_loss"]] == [1, 2, 3]  # TensorBoard went on
    assert json.loads((run / "loggers.json").read_text())["failed"]["mlflow"].startswith("logging train_log.csv")
    client, dropped = store(Path(cfg.out_dir)), mlflow_run(run)
    assert client.get_run(dropped).info.status == "FAILED"  # closed when it was dropped, not left RUNNING
    assert history(client, dropped, "train/val_loss") == [(1, log["val_loss"][0])]
    monkeypatch.setattr(mlflow_logger.MLflow, "log", real)
    sent = log_command.run(compose([f"out_dir={cfg.out_dir}", "logger=mlflow"]), str(run), out_dir_given=True)
    assert mlflow_run(run) == dropped  # the same MLflow run gets the rows it lacked, each once
    assert history(client, dropped, "train/val_loss") == list(zip(log["epoch"], log["val_loss"], strict=True))
    assert client.get_run(dropped).data.metrics["summary/best_epoch"] == r["best_epoch"]
    assert client.get_run(dropped).info.status == "FINISHED"
    assert sent["sent_as"] == "meta-train" and sent["finished"]
    assert "tensorboard" in json.loads((run / "loggers.json").read_text())  # the other logger's entry is kept


@pytest.mark.slow  # moved out of the default suite to keep it under 5 minutes (`make test-slow`)
def test_a_resumed_run_goes_on_in_the_same_mlflow_run_and_event_files(make_cfg, monkeypatch):
    real, calls = train.validate, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train, "validate", interrupted)
    first = train.run(make_cfg("logger=many", "train.max_epochs=3"))
    client = store(Path(make_cfg().out_dir))
    run_id = mlflow_run(first["run_dir"])
    assert first["stop_reason"] == "interrupted" and client.get_run(run_id).info.status == "KILLED"
    monkeypatch.setattr(train, "validate", real)
    second = train.run(make_cfg(f"train.resume={first['run_dir']}", "train.max_epochs=3"))
    assert mlflow_run(second["run_dir"]) == run_id and client.get_run(run_id).info.status == "FINISHED"
    log = pd.read_csv(Path(second["run_dir"]) / "train_log.csv")
    assert history(client, run_id, "train/val_loss") == list(zip(log["epoch"], log["val_loss"], strict=True))
    tb = scalars(Path(second["run_dir"]) / "tensorboard")["train/val_loss"]
    assert [s for s, _ in tb] == [1, 2, 3]  # each epoch once


def test_log_refuses_what_it_cannot_send(tmp_path, make_cfg):
    run = train.run(make_cfg("logger=tensorboard"))["run_dir"]
    with pytest.raises(L2LError, match="choose where to send"):
        log_command.run(compose([]), run)
    log_command.run(compose(["logger=tensorboard"]), run)  # up to date already: nothing is sent twice
    assert [s for s, _ in scalars(Path(run) / "tensorboard")["train/val_loss"]] == [1, 2]
    (Path(run) / "loggers.json").unlink()  # event files it cannot account for
    with pytest.raises(L2LError, match="does not account for"):
        log_command.run(compose(["logger=tensorboard"]), run)
    with pytest.raises(L2LError, match="not a run folder"):
        log_command.run(compose(["logger=mlflow"]), str(tmp_path))


@pytest.mark.slow
def test_a_real_tracking_server_gets_the_run_and_its_loss_mid_run_is_survived(tmp_path, make_cfg, monkeypatch):
    """`mlflow server` on 127.0.0.1 (some seconds to start): a run logged to it and read back; then the server is
    stopped mid-run, and the run finishes with its folder whole."""
    port, mlflow = free_port(), shutil.which("mlflow", path=os.path.dirname(sys.executable))
    server = subprocess.Popen([mlflow, "server", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri",
                               f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "art")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"http://127.0.0.1:{port}"
    try:
        client = MlflowClient(uri)
        for _ in range(300):
            try:
                client.search_experiments(max_results=1)
                break
            except Exception:  # not up yet
                assert server.poll() is None, "mlflow server exited"
                time.sleep(0.2)
        else:
            pytest.fail("mlflow server did not come up in 60 s")
        r = train.run(make_cfg("logger=mlflow", f"logger.mlflow.tracking_uri={uri}"))
        log = pd.read_csv(Path(r["run_dir"]) / "train_log.csv")
        run_id = mlflow_run(r["run_dir"])
        assert history(client, run_id, "train/val_loss") == list(zip(log["epoch"], log["val_loss"], strict=True))
        assert {"train_log.csv", "config.yaml"} <= {a.path for a in client.list_artifacts(run_id)}
        assert client.get_experiment_by_name("meta-train/quadratic") is not None

        real = train.validate

        def stop_server(*args):
            server.terminate()
            server.wait()
            return real(*args)

        monkeypatch.setattr(train, "validate", stop_server)
        r = train.run(make_cfg("logger=mlflow", f"logger.mlflow.tracking_uri={uri}", "logger.mlflow.retries=0"))
        assert r["loggers"]["mlflow"].startswith("failed: logging train_log.csv: connection refused")
        assert len(pd.read_csv(Path(r["run_dir"]) / "train_log.csv")) == 2 and Path(r["run_dir"], "best.pt").is_file()
    finally:
        server.kill()


def test_the_logger_benchmark_times_every_stage_of_every_choice(tmp_path, capsys):
    bench = load_benchmark("loggers")
    times = bench.one_run("many", str(tmp_path))
    assert set(times) == {"open", "epoch row", "curves, 505 rows", "finish"}
    assert all(t > 0 for t in times.values())
    run = next((tmp_path / "evaluate").glob("*/*"))
    assert len(scalars(run / "tensorboard")["curve/adam/mean_loss"]) == 101  # what it timed was really sent


def test_series_names_steps_and_the_rows_already_sent():
    from l2lcli.loggers.series import points

    table = pd.DataFrame({"variant": ["hidden=40", "classes=null"], "ratio": [0.5, math.inf],
                          "learned_final_loss": [1.0, 2.0], "verdict": ["learned better", "baseline better"]})
    assert points("generalize.csv", table) == [("generalize/hidden:40/learned_final_loss", 1.0, 0),
                                               ("generalize/hidden:40/ratio", 0.5, 0),
                                               ("generalize/classes:null/learned_final_loss", 2.0, 0)]
    assert points("generalize.csv", table, skip=1) == [("generalize/classes:null/learned_final_loss", 2.0, 0)]
    assert points("finals.csv", table) == []  # per-problem tables stay artifacts


def test_a_run_that_fails_is_marked_failed_and_its_event_files_closed(make_cfg, monkeypatch):
    def broken(*args):
        raise L2LError("validation problems went away")

    monkeypatch.setattr(train, "validate", broken)
    cfg = make_cfg("logger=many")
    with pytest.raises(L2LError, match="went away"):
        train.run(cfg)
    [run] = (Path(cfg.out_dir) / "meta-train" / "quadratic").iterdir()
    assert store(Path(cfg.out_dir)).get_run(mlflow_run(run)).info.status == "FAILED"
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "status/text_summary" in acc.Tags()["tensors"]  # finish ran: the writer was flushed and closed
