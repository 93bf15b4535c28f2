"""Many runs of one command through Hydra's sweeper and launchers: `l2l COMMAND -m seed=0,1 hydra/launcher=joblib`.

The launchers (basic, joblib, submitit) run only on Hydra's own run path, not under the Compose API single runs use;
`hydra_zen.launch` reaches it over the packaged conf/. Each job calls the command's same `run(cfg)`, and leaves its
run folder where a single run would put it. The multirun's own folder holds one subfolder per job (Hydra's
.hydra/ files and job.json: its overrides, status, run folder and headline figures) and index.csv, one row per job.
Running the same command line again skips the jobs that finished.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shlex
import traceback
from pathlib import Path

import pandas as pd
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from . import runs
from .config import CONFIG_MODULE, check, compose, is_hydra, quoted, recipe_optimizer
from .distributed import only_meta_train
from .errors import L2LError, one_line
from .loggers import PARENT, open_loggers
from .runs import write_json, write_text

INDEX, JOB = "index.csv", "job.json"
PLUGINS = {"joblib": "hydra_joblib_launcher", "submitit_local": "hydra_submitit_launcher",
           "submitit_slurm": "hydra_submitit_launcher", "slurm": "hydra_submitit_launcher"}


def expand(overrides: list[str]) -> list[list[str]]:
    """Every job's overrides, in the order Hydra's basic sweeper launches them (seed=0,1 x lr=a,b: 4 jobs)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(overrides), None)[0]
    except HydraException as e:
        raise L2LError(f"bad override: {one_line(e)}") from None


def run(command: str, overrides: list[str]) -> dict:
    """Run `command` once per combination of the sweeps in `overrides`; the index of the jobs."""
    only_meta_train("a multirun")
    ours, theirs = [o for o in overrides if not is_hydra(o)], [o for o in overrides if is_hydra(o)]
    for o in theirs:
        key, _, value = o.partition("=")
        plugin = PLUGINS.get(value) if key == "hydra/launcher" else None
        if plugin and not importlib.util.find_spec(f"hydra_plugins.{plugin}"):
            raise L2LError(f"hydra/launcher={value} needs its Hydra plugin: pip install 'l2lcli[launchers]'")
        if key.lstrip("+") in ("hydra.sweep.dir", "hydra.sweep.subdir"):
            raise L2LError(f"{o}: the multirun keeps its own folder layout; choose the folder with multirun.dir=PATH")
    if any(o.split("=")[0] == "train.resume" and not o.endswith("=null") for o in ours):
        raise L2LError("--resume continues one run: resume each on its own, or run the multirun again (its finished "
                       "jobs are skipped)")
    jobs = expand(ours)
    for job in jobs:  # every job's config is checked before the first one starts
        try:
            check(compose(job), command)
        except L2LError as e:
            raise L2LError(f"job {' '.join(job)}: {e}") from None
    first = compose(jobs[0])
    folder = Path(first.multirun.dir or Path(first.out_dir) / "multirun" / command / _digest(command, ours))
    tasks = {compose(job).task.name for job in jobs}
    parent = open_loggers(first, "multirun", experiment=f"{command}/{first.task.name}" if len(tasks) == 1 else None)
    _mkdir(folder)
    with parent.start(folder.resolve()):
        write_text(folder / "command.txt", shlex.join(["l2l", command, "-m", *overrides]) + "\n")
        try:
            _launch(command, ours, theirs, folder, {b.name: b.handle() for b in parent.live}, len(jobs))
        finally:  # the index of what finished, also when the launcher or Ctrl-C stopped the rest
            index = _index(folder, jobs)
            parent.write_csv(folder / INDEX, index)
        failed = int((index["status"] != "finished").sum())
        parent.finish("FINISHED" if not failed else "FAILED")
    return {"command": "multirun", "of": command, "dir": str(folder), "jobs": len(jobs), "failed": failed,
            "table": index, "loggers": parent.report()}


def _digest(command: str, overrides: list[str]) -> str:
    """The multirun's folder name: the same command line lands in the same folder, so finished jobs are skipped."""
    return hashlib.sha256(json.dumps([command, overrides]).encode()).hexdigest()[:12]


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise L2LError(f"cannot create the multirun folder '{folder}' ({e.strerror or e}): set multirun.dir=PATH "
                       "or out_dir=PATH to a writable folder") from None


def _launch(command: str, ours: list[str], theirs: list[str], folder: Path, parents: dict, jobs: int) -> None:
    from hydra_zen import launch

    hydra = [f"hydra.searchpath=[pkg://{CONFIG_MODULE}]", f"hydra.sweep.dir={quoted(str(folder.resolve()))}",
             "hydra.sweep.subdir=${hydra.job.num}", *theirs]
    # the job function travels to other processes (joblib) and machines (submitit): a module-level function and
    # plain data, pickled
    try:
        launch({"defaults": ["config", "_self_"]}, functools.partial(_job, command, parents, jobs),
               overrides=hydra + ours, multirun=True, version_base="1.3", job_name=command)
    except (HydraException, OmegaConfBaseException) as e:  # the launcher's config: jobs catch their own errors
        raise L2LError(f"the multirun's launcher refused it: {one_line(e)[:200]}") from None
    except (KeyboardInterrupt, L2LError):
        raise
    except Exception as e:  # the launcher itself (a SLURM job killed, no sbatch): index.csv says what finished
        raise L2LError(f"the multirun's launcher failed ({type(e).__name__}: {one_line(e)[:160]}); {folder / INDEX} "
                       "lists what finished; run the same command again to run the rest") from None


def _job(command: str, parents: dict, jobs: int, cfg: DictConfig) -> dict:
    """One job: skipped if it finished in an earlier launch of this multirun; else the command's run(cfg), its
    outcome kept in job.json whatever it is (a failed job does not stop the others; Ctrl-C stops them all)."""
    from hydra.core.hydra_config import HydraConfig

    from .commands import runner

    hc = HydraConfig.get()
    folder = Path(hc.runtime.output_dir)
    overrides = [o for o in hc.overrides.task if not is_hydra(o)]
    before = _finished(folder.parent, overrides)  # by its overrides: a shuffled sweep numbers its jobs anew
    if before:
        write_json(folder / JOB, {**before, "job": hc.job.num, "ran": "before"})
        return before
    record = {"job": hc.job.num, "overrides": overrides, "status": "running", "ran": "now", "run_dir": None}
    before_line, runs.COMMAND_LINE = runs.COMMAND_LINE, shlex.join(["l2l", command, *overrides])  # its own
    write_json(folder / JOB, record)
    token = PARENT.set(parents)
    try:
        if recipe_optimizer(cfg, overrides) not in (None, cfg.optimizer.name):
            cfg = compose(overrides)  # Hydra's launcher composed the job without compose()'s choice of it
        results = runner(command)(_job_config(cfg, hc, jobs))
        record.update(status="finished", run_dir=_run_dir(results), **headline(command, results))
        if results.get("stop_reason") == "interrupted" or "evaluate" not in results and command == "experiment":
            record["status"] = "interrupted"  # Ctrl-C ended its meta-training: not finished, and no more jobs
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        record["status"] = "interrupted"
        write_json(folder / JOB, record)
        raise
    except L2LError as e:
        record.update(status="failed", error=str(e))
    except Exception as e:  # a bug in one job must not lose the others' results: kept, with its traceback
        record.update(status="failed", error=f"{type(e).__name__}: {one_line(e)} (see error.txt)")
        write_text(folder / "error.txt", traceback.format_exc())
    finally:
        PARENT.reset(token)
        runs.COMMAND_LINE = before_line
    write_json(folder / JOB, record)
    return record


def _job_config(cfg: DictConfig, hc, jobs: int) -> DictConfig:
    """The job's config as compose() gives a single run: resolved, closed to new keys; with device.threads null,
    the cores the job may use: submitit's cpus_per_task, else this machine's shared among the jobs running at once
    (joblib: n_jobs of them; submitit_local: all)."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    if cfg.device.threads is None:
        launcher, target = hc.launcher, str(hc.launcher.get("_target_", ""))
        cores = len(os.sched_getaffinity(0))  # on a cluster node: what the job was given
        if launcher.get("cpus_per_task"):
            cores = launcher.cpus_per_task
        elif "joblib" in target:
            at_once = launcher.get("n_jobs") or 1
            cores //= min(jobs, os.cpu_count() if at_once < 0 else at_once)
        elif "LocalLauncher" in target:  # submitit_local starts every job at once
            cores //= jobs
        with open_dict(cfg):
            cfg.device.threads = max(1, cores)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _run_dir(results: dict) -> str | None:
    if "run_dir" in results:
        return results["run_dir"]
    return results.get("evaluate", results.get("meta-train", {})).get("run_dir")  # experiment: its three runs


def headline(command: str, r: dict) -> dict:
    """A job's figures for the index: what one compares across seeds and recipes."""
    if command == "experiment":
        return {**headline("meta-train", r["meta-train"]), **(headline("evaluate", r["evaluate"])
                                                              if "evaluate" in r else {})}
    if command == "meta-train":
        return {k: r[k] for k in ("best_val_loss", "best_epoch", "epochs", "stop_reason", "seconds",
                                  "optimizee_steps_per_second")}
    if command == "evaluate":
        row = r["rows"][0]
        return {"final_loss": row["final_loss"], "ratio": row["ratio_to_best_baseline"],
                **{k: row[k] for k in ("ratio_low", "ratio_high") if k in row}}
    if command == "sweep-baselines":
        return {f"{b['optimizer']}_{k}": b[k] for b in r["best"] for k in ("lr", "final_loss")}
    return {f"ratio {row['variant']}": row["ratio"] for row in r["rows"]}  # generalize


def _finished(folder: Path, overrides: list[str]) -> dict | None:
    """The record of a job of this multirun with these overrides that finished in an earlier launch."""
    for path in folder.glob(f"*/{JOB}"):
        record = _read(path)
        if record.get("status") == "finished" and record.get("overrides") == overrides:
            return {**record, "ran": "before"}
    return None


def _index(folder: Path, jobs: list[list[str]]) -> pd.DataFrame:
    """One row per job from its job.json (a job killed with its process: 'not finished')."""
    rows = []
    for num, job in enumerate(jobs):
        record = _read(folder / str(num) / JOB)
        status = record.get("status", "not run")
        rows.append({"job": num, "overrides": " ".join(record.get("overrides") or job),
                     "status": "not finished" if status == "running" else status,
                     **{k: v for k, v in record.items() if k not in ("job", "overrides", "status")}})
    return pd.DataFrame(rows)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}  # a job.json cut short by a kill: the job runs again
