"""The `l2l` command line: parse, compose the config, call a `run(cfg)`, print the result. Nothing else."""

from __future__ import annotations

import math
import sys

import typer
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from .config import GROUPS, L2LError, compose, group_choices

GROUPS_HELP = "Config groups (override with group=choice): " + "; ".join(
    f"{g}: {', '.join(group_choices(g))}" for g in GROUPS) + ". Any key: key=value, e.g. train.unroll=20."
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
OVERRIDES = typer.Argument(None, help="Hydra-style overrides: task=mnist optimizer=lstm train.meta_lr=0.01 ...",
                           show_default=False)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help=f"l2l: meta-train learned optimizers and compare them with tuned baselines. {GROUPS_HELP}")
data_app = typer.Typer(no_args_is_help=True, help="Get datasets into data.root.")
app.add_typer(data_app, name="data")
out = Console()
err = Console(stderr=True)


def _fail(msg: str) -> None:
    err.print(f"[red]error:[/red] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _table(df, title: str) -> None:
    table = Table(title=title)
    for c in df.columns:
        table.add_column(c)
    for row in df.itertuples(index=False):
        table.add_row(*(("-" if math.isnan(v) else f"{v:.4g}") if isinstance(v, float) else str(v) for v in row))
    out.print(table)


def _override_value(v) -> str:
    """A saved config value in Hydra's override grammar: {name:['prefix',...]}, not Python's repr of a dict or list,
    which Hydra cannot parse."""
    if OmegaConf.is_dict(v):
        return "{" + ",".join(f"{k}:{_override_value(x)}" for k, x in v.items()) + "}"
    if OmegaConf.is_list(v):
        return "[" + ",".join(repr(x) if isinstance(x, str) else _override_value(x) for x in v) + "]"
    return str(v)


def _checkpoint_overrides(checkpoint: str, overrides: list[str], groups=("task", "optimizer")) -> list[str]:
    """Use a checkpoint with the config `groups` it was trained with (evaluation: task and optimizer; fine-tuning:
    the optimizer); the command line may change their keys.

    The data folder is not inherited: it belongs to the machine, not to the experiment.
    """
    from .runs import load_checkpoint

    saved = load_checkpoint(checkpoint)["config"]
    for o in overrides:
        key, _, value = o.partition("=")
        if key in groups and value != saved[key].name:
            raise L2LError(f"checkpoint '{checkpoint}' holds optimizer={saved.optimizer.name} trained on "
                           f"task={saved.task.name}; it cannot be used with {key}={value}")
    given = {o.key_or_group for o in OverridesParser.create().parse_overrides(overrides)}
    inherited = [f"{group}.{k}={_override_value(v)}" for group in groups for k, v in saved[group].items()
                 if f"{group}.{k}" not in given and not k.startswith("_") and k not in ("name", "root")
                 and v is not None]
    return [f"{group}={saved[group].name}" for group in groups] + inherited + overrides


def _invoke(command: str, overrides: list[str] | None, **extra) -> dict:
    from . import evaluate, generalize, sweep, train

    overrides = list(overrides or [])
    try:
        if command in ("evaluate", "generalize") and extra.get("eval.checkpoint"):
            overrides = _checkpoint_overrides(extra["eval.checkpoint"], overrides)
        if command == "meta-train" and extra.get("train.init_from"):
            overrides = _checkpoint_overrides(extra["train.init_from"], overrides, groups=("optimizer",))
        overrides += [f"{k}={v}" for k, v in extra.items() if v is not None]
        cfg = compose(overrides)
        runner = {"meta-train": train.run, "evaluate": evaluate.run, "sweep-baselines": sweep.run,
                  "generalize": generalize.run}[command]
        return runner(cfg)
    except L2LError as e:
        _fail(str(e))


def _print_meta_train(r: dict) -> None:
    out.print(f"meta-train {r['task']}/{r['optimizer']}: best validation loss {r['best_val_loss']:.4g} at epoch "
              f"{r['best_epoch']} of {r['epochs']} ({r['stop_reason']}), {r['optimizee_steps_per_second']:.0f} "
              f"optimizee steps/s -> {r['checkpoint']}")
    if r["stop_reason"] == "interrupted":
        raise typer.Exit(130)


def _print_sweep(r: dict) -> None:
    _table(r["table"][["optimizer", "lr", "final_loss", "log10_final_loss"]],
           f"{r['task']}: best learning rates, {r['steps']} steps, {r['problems']} {r['split']} problems")
    if r["never_converged"]:
        out.print(f"diverged at every learning rate: {', '.join(r['never_converged'])}")
    out.print(f"sweep-baselines -> {r['run_dir']}")


def _print_evaluate(r: dict) -> None:
    cols = ["optimizer", "lr", "final_loss", "log10_final_loss", "ratio_to_best_baseline", "ms_per_step"]
    _table(r["table"][cols],
           f"{r['task']}: mean loss after {r['steps']} steps on {r['problems']} {r['split']} problems")
    out.print(f"evaluate -> {r['run_dir']}")


@app.command("meta-train", context_settings=EXTRA, short_help="Meta-train a learned optimizer.",
             help=f"Meta-train a learned optimizer. {GROUPS_HELP}")
def meta_train(overrides: list[str] | None = OVERRIDES,
               resume: str | None = typer.Option(None, help="Continue a killed run: its folder or last.pt."),
               init_from: str | None = typer.Option(None, help="Start from a trained optimizer's weights (a run "
                                                    "folder or .pt): fine-tuning, longer unrolls, new tasks.")):
    _print_meta_train(_invoke("meta-train", overrides, **{"train.resume": resume, "train.init_from": init_from}))


@app.command(context_settings=EXTRA, short_help="Evaluate an optimizer on fresh test problems.",
             help=f"Evaluate an optimizer on fresh test problems. {GROUPS_HELP}")
def evaluate(overrides: list[str] | None = OVERRIDES,
             checkpoint: str | None = typer.Option(None, help="A meta-train run folder or .pt file."),
             baselines: str | None = typer.Option(None, help="A sweep-baselines run folder or its best.csv.")):
    _print_evaluate(_invoke("evaluate", overrides, **{"eval.checkpoint": checkpoint, "eval.baselines": baselines}))


@app.command("sweep-baselines", context_settings=EXTRA,
             short_help="Sweep the baselines' learning rates on the test problems.",
             help=f"Sweep the baselines' learning rates on the test problems. {GROUPS_HELP}")
def sweep_baselines(overrides: list[str] | None = OVERRIDES):
    _print_sweep(_invoke("sweep-baselines", overrides))


@app.command(context_settings=EXTRA,
             short_help="The main job: meta-train, sweep the baselines, evaluate both, print the comparison.",
             help=f"The main job: meta-train, sweep the baselines, evaluate both, print the comparison. {GROUPS_HELP}")
def experiment(overrides: list[str] | None = OVERRIDES):
    trained = _invoke("meta-train", overrides)
    _print_meta_train(trained)
    swept = _invoke("sweep-baselines", overrides)
    _print_sweep(swept)
    _print_evaluate(_invoke("evaluate", overrides, **{"eval.checkpoint": trained["checkpoint"],
                                                      "eval.baselines": swept["run_dir"]}))


@app.command(context_settings=EXTRA, short_help="A trained optimizer on task variants (paper Figures 5 and 6).",
             help="Run a trained optimizer on task variants it never saw (generalize.figure=figure5: 40 hidden "
                  "units, 2 layers, ReLU, 200 steps; figure6: widths x depths) against baselines tuned on each. "
                  f"{GROUPS_HELP}")
def generalize(overrides: list[str] | None = OVERRIDES,
               checkpoint: str = typer.Option(..., help="A meta-train run folder or .pt file.")):
    r = _invoke("generalize", overrides, **{"eval.checkpoint": checkpoint})
    _table(r["table"][["variant", "learned_final_loss", "best_baseline", "best_baseline_final_loss", "ratio",
                       "verdict"]], f"{r['task']}: {r['figure']}, {r['problems']} {r['split']} problems per variant")
    out.print(f"generalize -> {r['run_dir']}")


@data_app.command("download", context_settings=EXTRA,
                  help="Download a dataset into data.root, checking each file's md5 (needs a network).")
def data_download(dataset: str = typer.Argument(..., help="mnist"), overrides: list[str] | None = OVERRIDES):
    from .data import download_mnist

    try:
        if dataset != "mnist":
            raise L2LError(f"unknown dataset '{dataset}': choose mnist")
        root = compose(list(overrides or [])).data.root
        files = download_mnist(root)
    except L2LError as e:
        _fail(str(e))
    out.print(f"mnist: {len(files)} files verified in {root}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
