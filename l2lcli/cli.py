"""The `l2l` command line: parse, compose the config, call a command's `run(cfg)`, print the result. Nothing else."""

from __future__ import annotations

import math
import sys

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .config import GROUPS, compose, group_choices
from .errors import L2LError

GROUPS_HELP = "Config groups (override with group=choice): " + "; ".join(
    f"{g}: {', '.join(group_choices(g))}" for g in GROUPS) + ". Any key: key=value, e.g. train.unroll=20."
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
OVERRIDES = typer.Argument(None, help="Hydra-style overrides: task=mnist recipe=paper train.meta_lr=0.01 ...",
                           show_default=False)
MULTIRUN = typer.Option(False, "--multirun", "-m", help="A job per combination of the sweeps (seed=0,1 "
                        "train.meta_lr=1e-3,1e-2) through Hydra's launcher (hydra/launcher=basic|joblib|"
                        "submitit_local|submitit_slurm); an index of the jobs; a re-run skips finished ones.")

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help=f"l2l: meta-train learned optimizers and compare them with tuned baselines. {GROUPS_HELP}")
data_app = typer.Typer(no_args_is_help=True, help="Get datasets into data.root.")
app.add_typer(data_app, name="data")
pretrained_app = typer.Typer(help="The trained rules shipped with l2l: list them with their cards; ship a new one.")
app.add_typer(pretrained_app, name="pretrained")
PRETRAINED = typer.Option(None, "--pretrained", help="A rule shipped with l2l (`l2l pretrained` lists them), in place "
                          "of a checkpoint.")
out = Console() if sys.stdout.isatty() else Console(width=160)  # logs and pipes: whole tables, not cut at 80
err = Console(stderr=True)


def _fail(e: L2LError):
    """The one error path: a message on one line on stderr, exit code 2."""
    err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)  # [mlflow] is not markup
    raise typer.Exit(2) from None


def _run(command: str, overrides: list[str] | None, multirun: bool = False, checkpoint=None, init_from=None,
         pretrained=None, **keys) -> dict:
    """Compose the command's config and run it; with -m, run a job per combination of the sweeps and print the
    index instead (exit 1 if a job failed). A pretrained rule stands for the checkpoint (or init_from) it ships."""
    # imported here, not at the top: `l2l --help` then answers without loading torch and the commands
    from .commands import common, runner

    try:
        if pretrained:
            if checkpoint or init_from:
                raise L2LError("--pretrained names the checkpoint: pass it or --checkpoint / --init-from, not both")
            from .pretrained import path
            shipped = str(path(pretrained))
            checkpoint, init_from = (None, shipped) if command == "meta-train" else (shipped, None)
        if keys.get("train.resume") and (init_from or pretrained):
            raise L2LError("--resume continues a run with its own weights: drop --init-from / --pretrained")
        given = common.command_overrides(list(overrides or []), checkpoint=checkpoint, init_from=init_from, **keys)
        if not multirun:
            return runner(command)(common.compose(given))
        from .multirun import run as launch

        r = launch(command, given)
    except L2LError as e:
        _fail(e)
    _print_multirun(r)
    raise typer.Exit(1 if r["failed"] else 0)


def _print_multirun(r: dict) -> None:
    t = r["table"]
    # only what differs between jobs: the swept values
    common = set.intersection(*(set(o.split()) for o in t["overrides"]))
    shown = t.drop(columns=[c for c in ("run_dir", "error") if c in t]).assign(
        overrides=[" ".join(x for x in o.split() if x not in common) for o in t["overrides"]])
    _table(shown, f"l2l {r['of']} -m: {r['jobs']} jobs, {r['failed']} not finished")
    for row in t[t["status"] != "finished"].itertuples():
        out.print(escape(f"job {row.job} ({row.overrides}): {row.status}: {getattr(row, 'error', '') or ''}"),
                  highlight=False, soft_wrap=True)
    out.print(escape(f"multirun -> {r['dir']} (index.csv; each job's run folder in its run_dir column)"),
              highlight=False, soft_wrap=True)
    _print_loggers(r)


def _table(df, title: str) -> None:
    table = Table(title=title)
    for c in df.columns:
        table.add_column(c)
    for row in df.itertuples(index=False):
        table.add_row(*(("-" if math.isnan(v) else f"{v:.4g}") if isinstance(v, float) else str(v) for v in row))
    out.print(table)


def _print_meta_train(r: dict) -> None:
    if r.get("rank"):  # under torchrun, rank 0 speaks for the run
        return
    out.print(f"meta-train {r['task']}/{r['optimizer']} (recipe {r['recipe']}): best validation loss "
              f"{r['best_val_loss']:.4g} at epoch {r['best_epoch']} of {r['epochs']} ({r['stop_reason']}), "
              f"{r['optimizee_steps_per_second']:.0f} optimizee steps/s, data {_data(r)} -> {r['checkpoint']}")
    _print_loggers(r)
    if r["stop_reason"] == "interrupted":
        raise typer.Exit(130)


def _print_loggers(r: dict) -> None:
    """Where each logger chosen with logger= sent the run (or why it stopped)."""
    for name, where in (r.get("loggers") or {}).items():
        out.print(f"  {name}: {escape(where)}", highlight=False, soft_wrap=True)


def _data(r: dict) -> str:
    """What data a run used, as its summary records it: the source, and the images per split where there are some."""
    d = r.get("data") or {}
    counts = [str(d[k]) for k in ("train_images", "validation_images", "test_images") if k in d]
    return d.get("source", "none") + (f" ({'/'.join(counts)} train/validation/test images)" if counts else "")


def _print_sweep(r: dict) -> None:
    _table(r["table"][["optimizer", "lr", "final_loss", "log10_final_loss"]],
           f"{r['task']}: best learning rates, {r['steps']} steps, {r['problems']} {r['split']} problems")
    if r["never_converged"]:
        out.print(f"diverged at every learning rate: {', '.join(r['never_converged'])}")
    out.print(f"sweep-baselines (data {_data(r)}) -> {r['run_dir']}")
    _print_loggers(r)


def _intervals(t, prefix: str = "") -> list[str]:
    """Each row's ratio interval, to 3 decimals: near 1, 3 significant digits would print 1.0012 as 1."""
    def r(x):
        return f"{x:.3f}" if abs(x) >= 0.1 else f"{x:.2g}"
    return [f"{r(lo)}-{r(hi)}" for lo, hi in zip(t[f"{prefix}ratio_low"], t[f"{prefix}ratio_high"], strict=True)]


def _print_evaluate(r: dict) -> None:
    t = r["table"]
    shown = t[["optimizer", "lr", "final_loss", "log10_final_loss", "ratio_to_best_baseline", "ms_per_step",
               "cost_vs_adam"]].copy()
    if "ratio_low" in t:  # the ratio with its 95% bootstrap interval over the problems, in one column
        shown.insert(5, "95% interval", _intervals(t))
    shown = shown.rename(columns={"log10_final_loss": "log10", "ratio_to_best_baseline": "ratio",
                                  "ms_per_step": "ms/step", "cost_vs_adam": "x adam"})
    _table(shown,
           f"{r['task']}: mean loss after {r['steps']} steps on {r['problems']} {r['split']} problems")
    for row in t[t["learned"]].itertuples():
        out.print(f"{row.optimizer}: ms/step counts warm steps; its first step took {row.first_step_ms:.0f} ms "
                  "(compiling the learned step where device.compile is on, first allocations)")
    out.print(f"evaluate (data {_data(r)}) -> {r['run_dir']}")
    _print_loggers(r)


@app.command("meta-train", context_settings=EXTRA, short_help="Meta-train a learned optimizer.",
             help=f"Meta-train a learned optimizer. {GROUPS_HELP}")
def meta_train(overrides: list[str] | None = OVERRIDES, multirun: bool = MULTIRUN,
               resume: str | None = typer.Option(None, help="Continue a killed or finished run: its folder or "
                                                 "last.pt; train.max_epochs=N (train.patience, train.time_limit) "
                                                 "gives it a new budget."),
               init_from: str | None = typer.Option(None, help="Start from a trained optimizer's weights (a run "
                                                    "folder or .pt): fine-tuning, longer unrolls, new tasks."),
               pretrained: str | None = PRETRAINED):
    _print_meta_train(_run("meta-train", overrides, multirun, init_from=init_from, pretrained=pretrained,
                           **{"train.resume": resume}))


@app.command(context_settings=EXTRA, short_help="Evaluate an optimizer on fresh test problems.",
             help=f"Evaluate an optimizer on fresh test problems. {GROUPS_HELP}")
def evaluate(overrides: list[str] | None = OVERRIDES, multirun: bool = MULTIRUN,
             checkpoint: str | None = typer.Option(None, help="A meta-train run folder or .pt file."),
             baselines: str | None = typer.Option(None, help="A sweep-baselines run folder or its best.csv."),
             pretrained: str | None = PRETRAINED):
    _print_evaluate(_run("evaluate", overrides, multirun, checkpoint=checkpoint, pretrained=pretrained,
                         **{"eval.baselines": baselines}))


@app.command("sweep-baselines", context_settings=EXTRA,
             short_help="Sweep the baselines' learning rates on the test problems.",
             help=f"Sweep the baselines' learning rates on the test problems. {GROUPS_HELP}")
def sweep_baselines(overrides: list[str] | None = OVERRIDES, multirun: bool = MULTIRUN):
    _print_sweep(_run("sweep-baselines", overrides, multirun))


@app.command(context_settings=EXTRA,
             short_help="The main job: meta-train, sweep the baselines, evaluate both, print the comparison.",
             help=f"The main job: meta-train, sweep the baselines, evaluate both, print the comparison. {GROUPS_HELP}")
def experiment(overrides: list[str] | None = OVERRIDES, multirun: bool = MULTIRUN):
    r = _run("experiment", overrides, multirun)
    _print_meta_train(r["meta-train"])  # exits 130 if meta-training was interrupted
    _print_sweep(r["sweep-baselines"])
    _print_evaluate(r["evaluate"])
    if r.get("loggers"):
        out.print("the job as one parent run:")
        _print_loggers(r)


@app.command(context_settings=EXTRA, short_help="A trained optimizer on task variants (paper Figures 5-8).",
             help="Run a trained optimizer on task variants it never saw (generalize.figure=figure5: 40 hidden "
                  "units, 2 layers, ReLU, 200 steps; figure6: widths x depths; figure7 with task=cifar: CIFAR-10, "
                  "-5, -2, with --sub; figure8 with task=art: 64x64, 128x128, a new style) against baselines "
                  "tuned on each. "
                  f"{GROUPS_HELP}")
def generalize(overrides: list[str] | None = OVERRIDES, multirun: bool = MULTIRUN,
               checkpoint: str | None = typer.Option(None, help="A meta-train run folder or .pt file."),
               sub: str | None = typer.Option(None, help="Figure 7's LSTM-sub: a meta-train run on the held-out "
                                              "labels (task.classes=heldout5), raced beside the checkpoint."),
               baselines: str | None = typer.Option(None, help="A sweep-baselines run folder, or a folder of them: "
                                                    "each variant takes the newest one swept on its very problems "
                                                    "(the others are swept here), so several checkpoints share "
                                                    "one sweep per variant."),
               pretrained: str | None = PRETRAINED):
    r = _run("generalize", overrides, multirun, checkpoint=checkpoint, pretrained=pretrained,
             **{"generalize.sub": sub, "eval.baselines": baselines})
    t = r["table"].copy()
    if "ratio_low" in t:
        t["95% interval"] = _intervals(t)
    if "sub_ratio_low" in t:
        t["sub 95% interval"] = _intervals(t, "sub_")
    cols = ["variant", "learned_final_loss", "best_baseline", "best_baseline_final_loss", "ratio"]
    cols += ["95% interval"] if "95% interval" in t else []
    cols += ["verdict"] + [c for c in ("sub_final_loss", "sub_ratio", "sub 95% interval") if c in t]
    _table(t[cols], f"{r['task']}: {r['figure']}, {r['problems']} {r['split']} problems per variant")
    if baselines:
        for row in r["rows"]:
            out.print(f"baselines of {row['variant']}: {row['baselines']}")
    out.print(f"generalize -> {r['run_dir']}")
    _print_loggers(r)


@app.command(context_settings=EXTRA, short_help="Send a run folder to TensorBoard / MLflow.",
             help="Send a run folder that exists (its CSVs' figures, summary, config and files) to the loggers "
                  "chosen with logger=tensorboard | mlflow | many: runs made without them, or whose tracking server "
                  "went away mid-run. The run's own config is used; only logger.* (and out_dir) come from here.")
def log(run: str = typer.Argument(..., help="A run folder under outputs/<command>/<task>/."),
        overrides: list[str] | None = OVERRIDES):
    from .commands import log as log_command

    try:
        r = log_command.run(compose(list(overrides or [])), run, any(o.startswith("out_dir=") for o in overrides or []))
    except L2LError as e:
        _fail(e)
    ended = "" if r["finished"] else " (it never finished)"
    out.print(escape(f"log: {r['sent_as']} run {r['run_dir']} sent{ended}"), highlight=False, soft_wrap=True)
    _print_loggers(r)
    if any(v.startswith("failed") for v in r["loggers"].values()):
        raise typer.Exit(1)


REPORT_RUNS = typer.Argument(None, help="Run folders or folders holding them (default: outputs).", show_default=False)


@app.command(short_help="The reproduction report: every claim of the paper with its measured verdict.",
             help="Build a report (Markdown with PNG figures) of every claim of the paper from the run folders under "
                  "RUNS (default: outputs): each claim's ratio to the best tuned baseline per meta-training seed, its "
                  "95% bootstrap interval, the spread over seeds, the verdict, the data and the commands.")
def report(runs: list[str] | None = REPORT_RUNS,
           to: str = typer.Option("docs/report.md", "--out", help="The Markdown file (figures beside it)."),
           readme: str | None = typer.Option(None, help="Also put the verdict table into this file (README.md), "
                                             "between its '<!-- l2l report: begin -->' and '... end -->' lines."),
           html: bool = typer.Option(False, "--html", help="Also write the report as an HTML page beside the "
                                     "Markdown (same name, .html).")):
    from .report.build import run as build_report

    try:
        r = build_report(list(runs or ["outputs"]), to, readme, html)
    except L2LError as e:
        _fail(e)
    t = r["table"]
    _table(t[["claim", "figure", "seeds", "ratio_min", "ratio_max", "verdict"]],
           f"{r['measured']} of {r['claims']} claims measured, from {r['runs']} runs")
    out.print(f"report -> {r['out']}" + (f", {r['html']}" if r["html"] else ""))


@data_app.command("download", context_settings=EXTRA,
                  help="Download a dataset into data.root, checking each file's md5 (needs a network). "
                       "Fashion-MNIST installs offline: apt-get install dataset-fashion-mnist.")
def data_download(dataset: str = typer.Argument(..., help="mnist or cifar10"),
                  overrides: list[str] | None = OVERRIDES):
    from .data.cifar import download_cifar10
    from .data.mnist import download_mnist

    downloads = {"mnist": download_mnist, "cifar10": download_cifar10}
    try:
        if dataset not in downloads:
            raise L2LError(f"unknown dataset '{dataset}': choose {' or '.join(downloads)} (fashion_mnist: "
                           "`apt-get install dataset-fashion-mnist`)")
        root = compose(list(overrides or [])).data.root
        files = downloads[dataset](root)
    except L2LError as e:
        _fail(e)
    out.print(f"{dataset}: {len(files)} file(s) verified in {root}")


@pretrained_app.callback(invoke_without_command=True)
def pretrained_list(ctx: typer.Context):
    """List the shipped rules with their cards."""
    if ctx.invoked_subcommand:
        return
    import pandas as pd

    from .pretrained import HERE, cards

    rows = [{"name": c["name"], "data": " ".join(filter(None, (c["data"].get("dataset"),
                                                              c["data"].get("source", "").split(",")[0]))),
             "test ratio (95%)": f"{c['test']['ratio']:.3f} ({_span(c['test']['ratio_95'])})",
             "vs": f"{c['test']['best_baseline']} {c['test']['best_baseline_lr']:.3g}",
             "meta-train": _minutes(c["meta_training"])} for c in cards()]
    if not rows:
        out.print(f"no pretrained rules in {HERE}")
        return
    _table(pd.DataFrame(rows), "pretrained rules (ratio: mean final test loss / best tuned baseline's)")
    out.print(escape(f"use: l2l evaluate --pretrained NAME, or TorchOptimizer.pretrained(NAME, model); cards in "
                     f"{HERE}"), highlight=False, soft_wrap=True)


def _minutes(meta: dict) -> str:
    """A rule's meta-training time; a fine-tuned one's with the runs it started from."""
    if not meta.get("init_from"):
        return f"{meta['seconds'] / 60:.0f} min"
    total = meta.get("seconds_with_init")
    return f"{meta['seconds'] / 60:.0f} min ({f'{total / 60:.0f}' if total else '?'} with its start)"


def _span(interval) -> str:
    return "-".join(f"{x:.3f}" for x in interval) if None not in interval else "-"


@pretrained_app.command("add", help="Ship the rule an evaluate run measured (the evaluate folder of `l2l "
                        "experiment`): its weights and config as NAME.pt, its card as NAME.json.")
def pretrained_add(run: str = typer.Argument(..., help="An evaluate run folder (test problems, swept baselines)."),
                   name: str = typer.Option(..., help="The rule's name, e.g. the task's."),
                   folder: str | None = typer.Option(None, help="Where to write (default: inside the package).")):
    from pathlib import Path

    from .pretrained import HERE, add

    try:
        c = add(run, name, Path(folder) if folder else HERE)
    except L2LError as e:
        _fail(e)
    out.print(f"pretrained {name}: {c['task']} ({c['data'].get('source', '-')}), test ratio {c['test']['ratio']:.3f} "
              f"to {c['test']['best_baseline']} -> {Path(folder) if folder else HERE}/{name}.pt")


def main() -> None:
    import shlex

    from . import runs

    runs.COMMAND_LINE = shlex.join(["l2l", *sys.argv[1:]])  # each run folder keeps the command that made it
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
