"""`l2l COMMAND -m`: a job per combination through Hydra's launchers, an index, finished jobs skipped on a re-run."""

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from l2lcli import multirun
from l2lcli.errors import L2LError
from tests.conftest import TINY
from tests.test_cli import l2l, one_line_error


def launch(tmp_path, *overrides, command="meta-train"):
    return multirun.run(command, [f"out_dir={tmp_path / 'out'}", *TINY, *overrides])


def test_a_job_per_combination_with_an_index_of_each_jobs_run_and_figures(tmp_path):
    r = launch(tmp_path, "seed=0,1", "train.meta_lr=0.003,0.01")
    index = pd.read_csv(Path(r["dir"]) / "index.csv")
    assert len(index) == 4 and (index["status"] == "finished").all() and (index["ran"] == "now").all()
    assert index["overrides"].str.contains("seed=0").sum() == 2
    for row in index.itertuples():
        summary = json.loads((Path(row.run_dir) / "summary.json").read_text())
        assert row.best_val_loss == summary["best_val_loss"] and row.best_epoch == summary["best_epoch"]
        saved = OmegaConf.load(Path(row.run_dir) / "config.yaml")
        assert f"seed={saved.seed}" in row.overrides and f"train.meta_lr={saved.train.meta_lr}" in row.overrides
        assert saved.optimizer.name == "lstm_gac"  # quadratics' recipe names it; Hydra's launcher alone would not
        # the job's own command line, as `l2l report` quotes it
        assert (Path(row.run_dir) / "command.txt").read_text().startswith("l2l meta-train out_dir=")
        assert (Path(r["dir"]) / str(row.job) / ".hydra" / "overrides.yaml").is_file()  # Hydra's own record
    assert len(set(index["run_dir"])) == 4  # four run folders where single runs put them
    assert all(Path(d).parent == tmp_path / "out" / "meta-train" / "quadratic" for d in index["run_dir"])


@pytest.mark.slow  # moved out of the default suite to keep it under 5 minutes (`make test-slow`)
def test_a_rerun_skips_the_jobs_that_finished(tmp_path):
    first = launch(tmp_path, "seed=0,1")
    folder = Path(first["dir"])
    (folder / "1" / "job.json").unlink()  # as if job 1 had been killed before it finished
    again = launch(tmp_path, "seed=0,1")
    assert again["dir"] == first["dir"]
    index = pd.read_csv(folder / "index.csv")
    assert index["ran"].tolist() == ["before", "now"] and (index["status"] == "finished").all()
    assert index["run_dir"][0] == first["table"]["run_dir"][0]
    assert len(list((tmp_path / "out" / "meta-train" / "quadratic").iterdir())) == 3  # job 0 did not run again


def test_a_failed_job_is_recorded_and_the_others_finish(tmp_path):
    r = launch(tmp_path, "train.init_from=null,/no/such/run")
    index = r["table"]
    assert index["status"].tolist() == ["finished", "failed"] and r["failed"] == 1
    assert "checkpoint '/no/such/run" in index["error"][1] and "not found" in index["error"][1]


def test_each_job_takes_the_optimizer_its_recipe_names_as_a_single_run_would(tmp_path):
    index = launch(tmp_path, "recipe=best,paper", "train.max_epochs=1")["table"]
    saved = [OmegaConf.load(Path(d) / "config.yaml") for d in index["run_dir"]]
    assert [(c.recipe.name, c.optimizer.name) for c in saved] == [("best", "lstm_gac"), ("paper", "lstm")]


def test_a_bad_value_in_any_job_refuses_the_multirun_before_any_job_runs(tmp_path):
    with pytest.raises(L2LError, match=r"job .*train.unroll=50.*longer than the horizon"):
        launch(tmp_path, "train.unroll=3,50")
    with pytest.raises(L2LError, match="multirun.dir=PATH"):
        launch(tmp_path, "seed=0,1", "hydra.sweep.dir=elsewhere")
    with pytest.raises(L2LError, match="resume each on its own"):
        launch(tmp_path, "seed=0,1", "train.resume=some/run")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # kept out of the default suite's 5 minutes; `make test-all` runs it
def test_ctrl_c_stops_the_multirun_and_a_rerun_runs_what_did_not_finish(tmp_path, monkeypatch):
    from l2lcli.commands import train

    real, calls = train.validate, []

    def interrupted(*args):  # Ctrl-C in job 0's second epoch
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(train, "validate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        launch(tmp_path, "seed=0,1")
    [folder] = (tmp_path / "out" / "multirun" / "meta-train").iterdir()
    index = pd.read_csv(folder / "index.csv")
    assert index["status"].tolist() == ["interrupted", "not run"]  # recorded, and job 1 never started
    monkeypatch.setattr(train, "validate", real)
    again = launch(tmp_path, "seed=0,1")["table"]
    assert again["status"].tolist() == ["finished", "finished"] and again["ran"].tolist() == ["now", "now"]


@pytest.mark.slow  # kept out of the default suite's 5 minutes; `make test-all` runs it
def test_joblib_runs_jobs_in_processes_with_the_cores_shared_and_the_same_numbers(tmp_path):
    basic = launch(tmp_path / "a", "seed=0,1", "device.threads=1")["table"]
    joblib = launch(tmp_path / "b", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")["table"]
    assert joblib["best_val_loss"].tolist() == basic["best_val_loss"].tolist()  # one thread each, same numbers
    for run in joblib["run_dir"]:  # this machine's cores shared by the 2 jobs at once
        saved = OmegaConf.load(Path(run) / "config.yaml")
        assert saved.device.threads == max(1, len(os.sched_getaffinity(0)) // 2)
        assert saved.optimizer.name == "lstm_gac"  # the recipe's choice, made in the job's own process


@pytest.mark.slow  # kept out of the default suite's 5 minutes; `make test-all` runs it
def test_a_multirun_is_one_mlflow_parent_run_with_a_child_per_job(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow import MlflowClient

    r = launch(tmp_path, "seed=0,1", "logger=mlflow")
    client = MlflowClient(f"sqlite:///{tmp_path / 'out'}/mlflow.db")
    experiment = client.get_experiment_by_name("meta-train/quadratic")  # the parent sits among its jobs' runs
    [parent] = client.search_runs([experiment.experiment_id], "tags.`l2l.command` = 'multirun'")
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["l2l.run_dir"] for c in children) == sorted(str(Path(d).resolve())
                                                                          for d in r["table"]["run_dir"])
    assert "index.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}


@pytest.mark.slow  # moved out of the default suite to keep it under 5 minutes (`make test-slow`)
def test_the_cli_multirun_prints_the_index_and_a_sweep_without_m_is_refused(tmp_path):
    res = l2l("meta-train", "-m", "seed=0,1", out=tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "2 jobs, 0 not finished" in res.output and "seed=1" in res.output
    res = l2l("meta-train", "-m", "train.init_from=/no/such/run", out=tmp_path / "out")
    assert res.exit_code == 1 and "failed" in res.output  # a failed job: exit 1, the index printed
    one_line_error(l2l("meta-train", "seed=0,1", out=tmp_path / "out"), "is a sweep: add -m")
    one_line_error(l2l("meta-train", "hydra/launcher=joblib", out=tmp_path / "out"), "add -m")


@pytest.mark.slow  # kept out of the default suite's 5 minutes; `make test-all` runs it
def test_submitit_local_runs_the_jobs_as_submitit_jobs(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    r = launch(tmp_path, "seed=0,1", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
               "hydra.launcher.cpus_per_task=1")
    assert (r["table"]["status"] == "finished").all()
    assert len(list(Path(r["dir"]).glob(".submitit/*/*_result.pkl"))) == 2  # each job ran as a submitit job
    for run in r["table"]["run_dir"]:
        assert OmegaConf.load(Path(run) / "config.yaml").device.threads == 1  # its cpus_per_task


def test_the_shipped_slurm_launcher_config_composes_over_submitit():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="l2lcli.conf", version_base="1.3"):
        cfg = compose("config", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.cpus_per_task == 8 and launcher.timeout_min == 240


def test_a_launcher_without_its_plugin_or_unknown_is_one_line(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "hydra_plugins.hydra_joblib_launcher" else real(n, *a))
    with pytest.raises(L2LError, match=r"pip install 'l2lcli\[launchers\]'"):
        launch(tmp_path, "seed=0,1", "hydra/launcher=joblib")
    monkeypatch.undo()
    with pytest.raises(L2LError, match="launcher refused it"):
        launch(tmp_path, "seed=0,1", "hydra/launcher=no_such_launcher")
