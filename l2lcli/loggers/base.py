"""Loggers: the run folder's tables, as they are written, sent on to TensorBoard and MLflow (the `logger` group).

The folder stays the record: a logger that fails mid-run is dropped with a warning, the run goes on, and the end of
the run says so (`l2l log RUN` sends a finished folder again).
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.markup import escape

from ..errors import L2LError, one_line
from ..runs import code_version, write_csv, write_json
from .series import TABLES, Point, params, points, summary_points

console = Console(stderr=True)
RECORD = "loggers.json"  # in the run folder: where each logger sent the run, so a resumed run goes on there
ARTIFACTS = ("*.png", "*.csv", "*.yaml", "*.json")
# The runs of an enclosing command (`l2l experiment`): {logger name: its handle}; children nest under them.
PARENT: ContextVar[dict | None] = ContextVar("l2l_parent_runs", default=None)


@dataclass
class RunInfo:
    """What every logger is told about a run when it starts."""

    command: str
    task: str
    name: str                 # the run folder's name (a parent run without a folder: a timestamp)
    run_dir: Path | None
    params: dict              # the resolved config, dotted keys
    tags: dict[str, str]      # code version, data source, command, task, folder
    config_yaml: str
    parents: dict = field(default_factory=dict)


class Backend:
    """One logger. Each method may raise: Loggers catches it, drops the logger and keeps the run going."""

    name = "backend"

    def start(self, info: RunInfo, saved: dict | None) -> dict:
        """Open the run (go on with `saved`, this logger's entry of loggers.json, where it can); return the entry."""
        raise NotImplementedError

    def log(self, batch: list[Point]) -> None:
        raise NotImplementedError

    def files(self, paths: list[Path], checkpoints: list[Path]) -> None:
        """The run folder's PNGs, CSVs, YAML and JSON files (and checkpoints) at the end of the run."""

    def finish(self, status: str, summary: list[Point], params: dict) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Best effort, after a failure: release files, mark the run failed where that still works."""

    def why(self, e: BaseException) -> str:
        """A failure's cause, short."""
        return one_line(e)[:200]

    def handle(self) -> dict:
        """What a child run needs to nest under this one."""
        return {}

    def where(self) -> str:
        raise NotImplementedError


class Loggers:
    """All the loggers of one run: `write_csv` / `write_json` write the folder's files and send their figures on.

    How many rows of each CSV each logger has had is kept in the folder's loggers.json, so a resumed run, or
    `l2l log` after a server outage, sends each logger exactly the rows it lacks.
    """

    def __init__(self, cfg: DictConfig, command: str, data: dict, backends: list[Backend],
                 failed: dict[str, str] | None = None):
        self.cfg, self.command, self.data = cfg, command, data
        self.live, self.failed, self.entries = list(backends), dict(failed or {}), {}
        self.summary: list[Point] = []
        self.run_dir: Path | None = None
        self.finished = False

    def start(self, run_dir: Path | None, resumed: bool = False) -> Loggers:
        """Open each logger's run for this folder. `resumed`: go on in the runs the folder's loggers.json records
        (a logger that cannot starts a new run) and send each logger the rows it has not had."""
        self.run_dir = run_dir
        saved = self._record() if resumed else {}
        self.entries = {k: v for k, v in saved.items() if k != "failed"}  # other loggers' entries are kept
        info = RunInfo(self.command, self.cfg.task.name, run_dir.name if run_dir else time.strftime("%Y%m%d-%H%M%S"),
                       run_dir, params(self.cfg), self._tags(), OmegaConf.to_yaml(self.cfg), dict(PARENT.get() or {}))
        for b in list(self.live):
            entry = self._call(b, "start", "start", info, saved.get(b.name))
            if entry is not None:
                sent = saved.get(b.name, {}).get("sent", {}) if entry.get("continued") else {}
                self.entries[b.name] = {**entry, "sent": dict(sent)}
        self._save_record()
        if resumed:
            self.send_folder()
        return self

    def send_folder(self) -> None:
        """Send every CSV the folder holds (the rows each logger has not had); summary.json's figures go at the
        finish: a resumed run's first epochs, or a whole run (`l2l log`)."""
        for name, df in self._tables():
            self.send_table(name, df)
        summary = self.run_dir / "summary.json" if self.run_dir else None
        if summary is not None and summary.is_file():
            self.summary = summary_points(read_json(summary))

    def write_csv(self, path: Path, df: pd.DataFrame) -> None:
        """Write a CSV into the run folder, then send its new rows' figures (see series.TABLES)."""
        write_csv(path, df)
        self.send_table(Path(path).name, df)

    def send_table(self, name: str, df: pd.DataFrame) -> None:
        """Send the rows of table `name` that each logger has not had."""
        for b in list(self.live):
            sent = self.entries.setdefault(b.name, {}).setdefault("sent", {})
            batch = points(name, df, skip=sent.get(name, 0))
            if not batch or self._call(b, f"logging {name}", "log", batch) is not False:
                sent[name] = len(df)
        self._save_record()

    def write_json(self, path: Path, results: dict) -> None:
        """Write summary.json; its figures are sent as summary/<key> when the run finishes."""
        write_json(path, results)
        self.summary = summary_points(results)

    def finish(self, status: str = "FINISHED") -> dict:
        """Send the folder's files, close every run with `status` (FINISHED, FAILED, KILLED); {logger: where}."""
        if self.finished:
            return self.report()
        self.finished = True
        files, checkpoints = self._files()
        for b in list(self.live):
            self._call(b, "sending the run folder's files", "files", files, checkpoints)
        for b in list(self.live):
            self._call(b, "closing the run", "finish", status, self.summary, params(self.cfg))
        self._save_record()
        for name, why in self.failed.items():
            console.print(escape(f"{name} logging failed ({why}); the run folder {self.run_dir or ''} has every "
                                 f"figure: send it with `l2l log {self.run_dir or 'RUN'} logger={name}`"),
                          style="yellow", highlight=False, soft_wrap=True)
        return self.report()

    def report(self) -> dict:
        """{logger: where to look, or why it stopped}."""
        return {**{b.name: self._where(b) for b in self.live},
                **{name: f"failed: {why}" for name, why in self.failed.items()}}

    @contextmanager
    def nest(self):
        """Runs started inside (the commands of `l2l experiment`) become children of this one's runs."""
        token = PARENT.set({b.name: b.handle() for b in self.live})
        try:
            yield self
        finally:
            PARENT.reset(token)

    def __enter__(self) -> Loggers:
        return self

    def __exit__(self, kind, error, tb) -> None:
        if kind is None:
            self.finish()
        else:
            self.finish("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")

    def _call(self, b: Backend, what: str, method: str, *args):
        """b.method(*args); False if it failed (the logger is then dropped, its run closed as FAILED if it can be)."""
        try:
            return getattr(b, method)(*args)
        except Exception as e:  # a logger never costs the run: drop it, keep going, say so at the end
            self.live.remove(b)
            self.failed[b.name] = f"{what}: {b.why(e)}"
            self._save_record()
            console.print(escape(f"{b.name} logging stopped ({self.failed[b.name]}); the run goes on, and its "
                                 "folder keeps every figure"), style="yellow", highlight=False, soft_wrap=True)
            try:
                b.close()
            except Exception:  # noqa: S110  (the server that failed may be gone: closing is best effort)
                pass
            return False

    def _where(self, b: Backend) -> str:
        try:
            return b.where()
        except Exception as e:  # only a description: never worth failing a finished run
            return f"(unknown: {one_line(e)[:80]})"

    def _tags(self) -> dict[str, str]:
        tags = {"l2l.command": self.command, "l2l.task": self.cfg.task.name, "l2l.code_version": code_version(),
                "l2l.run_dir": str(self.run_dir.resolve()) if self.run_dir else ""}
        return {**tags, **{f"data.{k}": str(v) for k, v in self.data.items()}}

    def _tables(self):
        for name in TABLES:
            path = self.run_dir / name if self.run_dir else None
            if path is not None and path.is_file():
                try:
                    yield name, pd.read_csv(path)
                except (ValueError, OSError) as e:  # pandas' parser errors are ValueErrors
                    raise L2LError(f"cannot read '{path}' ({one_line(e)[:100]}): restore it or remove it") from None

    def _files(self) -> tuple[list[Path], list[Path]]:
        if self.run_dir is None:
            return [], []
        files = sorted(p for pattern in ARTIFACTS for p in self.run_dir.glob(pattern) if p.name != RECORD)
        return files, sorted(self.run_dir.glob("*.pt"))

    def _record(self) -> dict:
        path = self.run_dir / RECORD if self.run_dir else None
        try:
            return read_json(path) if path and path.is_file() else {}
        except L2LError:
            return {}  # unreadable: each logger starts a new run and is sent every row

    def _save_record(self) -> None:
        if self.run_dir is not None and (self.entries or self.failed):
            write_json(self.run_dir / RECORD, {**self.entries, "failed": self.failed})


def read_json(path: Path) -> dict:
    """A JSON file of the run folder; an unreadable one is one line."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise L2LError(f"cannot read '{path}' ({one_line(e)[:100]}): restore it or remove it") from None
