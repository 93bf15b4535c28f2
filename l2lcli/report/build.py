"""`l2l report`: every claim of the paper with its measured verdict, from run folders alone.

Each finished evaluate and generalize run on test problems gives measurements: (claim, meta-training seed, ratio to
the best tuned baseline, its 95% bootstrap interval over the problems, ...). The latest run per claim, seed, recipe
and evaluation setting counts; the verdict needs every seed on the claimed side of 1, and two seeds or more.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..commands.evaluate import mismatch, problem_key
from ..config import horizon_of
from ..errors import L2LError
from ..runs import load_checkpoint, write_text
from ..stats import bootstrap_ratio
from .claims import BY_ID, CLAIMS, PAPER_MLP, evaluate_claim, generalize_claims

RESULT_KEYS = {"variant", "learned_final_loss", "best_baseline", "best_baseline_final_loss", "ratio", "ratio_low",
               "ratio_high", "verdict", "sub_final_loss", "sub_ratio", "sub_ratio_low", "sub_ratio_high", "baselines"}
COLUMNS = ["claim", "seed", "recipe", "ratio", "ratio_low", "ratio_high", "learned_final_loss", "best_baseline",
           "best_baseline_final_loss", "problems", "steps", "eval_seed", "data", "variant", "run_dir", "figure",
           "checkpoint", "command"]
MIN_SEEDS = 2


def gather(paths: list[Path]) -> pd.DataFrame:
    """One row per measured ratio in the finished evaluate / generalize runs under `paths` (test problems only)."""
    rows, skipped = [], []
    for summary in sorted({p for path in paths for p in _summaries(Path(path))}):
        s = json.loads(summary.read_text())
        if s.get("command") not in ("evaluate", "generalize") or s.get("split") != "test":
            continue
        run = summary.parent
        cfg = OmegaConf.load(run / "config.yaml")
        checkpoint = _find(cfg.eval.checkpoint, run)
        if checkpoint is None:  # moved or deleted: the run cannot say which seed it measured
            skipped.append(f"`{run}`: its checkpoint `{cfg.eval.checkpoint}` is gone")
            continue
        trained = load_checkpoint(checkpoint)["config"]
        if OmegaConf.select(trained, "task.family"):  # the paper's claims are about a rule trained on one task
            skipped.append(f"`{run}`: its rule was meta-trained on a family of tasks (task.family), not the paper's")
            continue
        if horizon_of(trained) != trained.task.steps:  # the claims' "trained on T steps" is the task's own T
            skipped.append(f"`{run}`: its rule was meta-trained on {horizon_of(trained)}-step trajectories "
                           f"(train.horizon), not the task's {trained.task.steps}")
            continue
        data = (s.get("data") or {}).get("source") or OmegaConf.select(cfg, "task.dataset", default="generated")
        common = {"seed": trained.seed, "recipe": OmegaConf.select(trained, "recipe.name", default="-"),
                  "problems": s["problems"], "eval_seed": cfg.eval.seed, "run_dir": str(run),
                  "data": data, "checkpoint": cfg.eval.checkpoint, "command": _command(run)}
        rows += (_evaluate_rows if s["command"] == "evaluate" else _generalize_rows)(s, cfg, trained, common)
    measured = pd.DataFrame(rows, columns=COLUMNS)
    measured.attrs["skipped"] = skipped
    return measured


def _find(checkpoint: str, run: Path) -> Path | None:
    """A checkpoint path as the run recorded it: absolute, or relative to where the run was started (the current
    folder, or one above the run folder: runs started elsewhere are read from anywhere)."""
    path = Path(checkpoint)
    for base in (Path.cwd(), *run.resolve().parents):
        if (base / path).exists():
            try:
                load_checkpoint(base / path)
            except L2LError:
                return None
            return base / path
    return None


def _summaries(path: Path):
    if path.is_file() and path.name == "summary.json":
        yield path
    elif path.is_dir():
        yield from path.rglob("summary.json")


def _evaluate_rows(s, cfg, trained, common) -> list[dict]:
    learned = [r for r in s["rows"] if r["learned"]]
    if not learned or not math.isfinite(learned[0]["ratio_to_best_baseline"]):
        return []  # no swept baselines: no ratio to report
    r = learned[0]
    claim = evaluate_claim(OmegaConf.to_container(cfg.task, resolve=True), cfg.optimizer.name, s["steps"],
                           trained.task.steps)
    if claim is None:
        return []
    base = min((b for b in s["rows"] if not b["learned"] and not b["diverged"]), key=lambda b: b["final_loss"])
    return [{**common, "claim": claim, "ratio": r["ratio_to_best_baseline"], "ratio_low": r.get("ratio_low"),
             "ratio_high": r.get("ratio_high"), "learned_final_loss": r["final_loss"],
             "best_baseline": f"{base['optimizer']} (lr {base['lr']:.3g})",
             "best_baseline_final_loss": base["final_loss"], "steps": s["steps"], "variant": "",
             "figure": str(Path(s["run_dir"]) / "curves.png")}]


def _generalize_rows(s, cfg, trained, common) -> list[dict]:
    out = []
    figure = s["figure"]
    if cfg.task.name == "mnist" and any(trained.task.get(k) != v for k, v in PAPER_MLP.items()):
        return out  # Figures 5-6 are about the paper's MLP's optimizer
    sub = _sub_checkpoint(cfg, common) if figure == "figure7" else None  # LSTM-sub, once per run
    sub_seed = load_checkpoint(sub)["config"].seed if sub is not None else None
    for row in s["rows"]:
        variant = {k: v for k, v in row.items() if k not in RESULT_KEYS}
        for claim in generalize_claims(figure, variant):
            out.append({**common, "claim": claim, "ratio": row["ratio"], "ratio_low": row.get("ratio_low"),
                        "ratio_high": row.get("ratio_high"), "learned_final_loss": row["learned_final_loss"],
                        "best_baseline": row["best_baseline"], "best_baseline_final_loss": row[
                            "best_baseline_final_loss"], "steps": variant.get("steps", cfg.task.steps),
                        "variant": row["variant"], "figure": str(Path(s["run_dir"]) / f"{figure}.png")})
        if sub is not None and row.get("sub_ratio") is not None and variant.get("classes"):
            out.append({**common, "claim": "fig7-sub", "seed": sub_seed,
                        "ratio": row["sub_ratio"],
                        "ratio_low": row.get("sub_ratio_low"), "ratio_high": row.get("sub_ratio_high"),
                        "learned_final_loss": row["sub_final_loss"],
                        "best_baseline": row["best_baseline"], "best_baseline_final_loss": row[
                            "best_baseline_final_loss"], "steps": cfg.task.steps, "variant": row["variant"],
                        "figure": str(Path(s["run_dir"]) / "figure7.png")})
    return out


def _sub_checkpoint(cfg, common: dict) -> Path | None:
    """LSTM-sub's checkpoint, whose seed its rows carry; None where the file is gone (its rows are left out)."""
    return _find(cfg.generalize.sub, Path(common["run_dir"])) if cfg.generalize.get("sub") else None


def _command(run: Path) -> str:
    path = run / "command.txt"
    return path.read_text().strip() if path.is_file() else ""


def latest(measured: pd.DataFrame) -> pd.DataFrame:
    """The latest run of each claim, seed, recipe, variant and evaluation setting: run folders' names start with their
    time (<date>-<time>-<optimizer>), whatever output folder holds them. Recipes stay apart (the default's and the
    paper's LSTM both answer Figure 2, and Appendix D pairs each optimizer with the LSTM of its own inputs)."""
    if measured.empty:
        return measured
    keys = ["claim", "seed", "recipe", "variant", "steps", "problems", "eval_seed"]
    when = measured["run_dir"].map(lambda r: Path(r).name)
    return (measured.assign(_when=when).sort_values(["_when", "run_dir"]).groupby(keys, dropna=False, sort=False)
            .tail(1).drop(columns="_when"))


def learned_finals(run_dir: str) -> pd.Series:
    """The learned optimizer's final loss per test problem in an evaluate run (its first row, `finals.csv`)."""
    finals = pd.read_csv(Path(run_dir) / "finals.csv")
    return finals[finals["row"] == 0].sort_values("problem")["final_loss"]


INPUTS = ("preprocess", "problem_inputs", "nominal")  # what a learned optimizer sees besides its own state


@functools.cache  # each Appendix D row looks through the same LSTM runs
def _problems(run_dir: str) -> tuple[dict, tuple]:
    """An evaluate run's problems (as a sweep compares them) and its learned optimizer's inputs."""
    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    return problem_key(cfg), tuple(cfg.optimizer.get(k) for k in INPUTS)


def against_lstm(kept: pd.DataFrame) -> pd.DataFrame:
    """Appendix D's rows with their ratio to the plain LSTM of the same seed and the same inputs on the very same
    problems (`vs_lstm`; task, split, seed, count and steps compared as for a sweep), and its paired bootstrap
    interval over those problems: the same function as every other interval. The LSTM is matched by inputs: an
    NTM without problem inputs meets the paper's LSTM, one with them (or LSTM+GAC) the LSTM of its recipe. Rows with
    no such LSTM, or without per-problem losses on either side, keep NaN."""
    kept = kept.assign(vs_lstm=math.nan, vs_lstm_low=math.nan, vs_lstm_high=math.nan, lstm_run="")
    if kept.empty:
        return kept
    lstm = kept[kept["claim"] == "fig2"]
    for i, r in kept[kept["claim"].map(lambda c: BY_ID[c].expect == "beats lstm")].iterrows():
        try:
            problems, inputs = _problems(r["run_dir"])
            candidates = ((d, *_problems(d)) for d in lstm[lstm["seed"] == r["seed"]]["run_dir"])
            ref = next((d for d, p, i in candidates if i == inputs and mismatch(p, problems) is None), None)
            if ref is None:
                continue
            ratio = bootstrap_ratio(learned_finals(r["run_dir"]).to_numpy(), learned_finals(ref).to_numpy())
        except (OSError, KeyError, ValueError, pd.errors.ParserError, yaml.YAMLError, OmegaConfBaseException):
            continue  # an unreadable run, or one from before per-problem losses were saved
        if math.isfinite(ratio[0]):
            kept.loc[i, ["vs_lstm", "vs_lstm_low", "vs_lstm_high", "lstm_run"]] = [*ratio, ref]
    return kept


def verdict(claim_id: str, rows: pd.DataFrame) -> str:
    """reproduced / not reproduced / mixed over seeds / not yet run; '(one seed)' where fewer than MIN_SEEDS.
    Appendix D's claims are judged on `vs_lstm` (against_lstm), the others on the ratio to the best baseline."""
    if rows.empty:
        return "not yet run"
    expect = BY_ID[claim_id].expect
    if expect == "beats lstm":  # against the plain LSTM of the same seed on the same problems
        rows = rows.dropna(subset=["vs_lstm"])
        if rows.empty:
            return "not yet run (no plain LSTM of the same seed and inputs on the same problems)"
        holds = [r < 1 for r in rows["vs_lstm"]]
        clear = [h if pd.isna(f) else f < 1 for f, h in zip(rows["vs_lstm_high"], holds, strict=True)]
    else:
        side = (lambda x: x < 1) if expect == "better" else (lambda x: x > 1)
        holds = [side(r) for r in rows["ratio"]]
        # the whole interval on the claimed side (a row without one is judged on its ratio)
        far = rows["ratio_high"] if expect == "better" else rows["ratio_low"]
        clear = [h if pd.isna(f) else side(f) for f, h in zip(far, holds, strict=True)]
    seeds = rows["seed"].nunique()
    # a seed holds the claim when every row of it does (Figure 6: every cell; Figure 2: every recipe measured)
    by_seed = pd.Series(holds, index=rows.index).groupby(rows["seed"]).all()
    if by_seed.all():
        word = "reproduced" if all(clear) else "within noise (an interval reaches 1)"
    else:
        word = "not reproduced" if not by_seed.any() else "mixed over seeds"
    return word + ("" if seeds >= MIN_SEEDS or word == "mixed over seeds" else " (one seed; the report asks two)")


def summarise(kept: pd.DataFrame) -> pd.DataFrame:
    """One row per claim from the kept measurements (latest, against_lstm): seeds, spread over seeds, verdict."""
    rows = []
    for c in CLAIMS:
        mine = kept[kept["claim"] == c.id]
        # Appendix D's claims are about the plain LSTM: their spread is of the ratio to it
        ratios = mine["vs_lstm" if c.expect == "beats lstm" else "ratio"].dropna().tolist()
        rows.append({"claim": c.id, "figure": c.figure, "statement": c.statement,
                     "seeds": int(mine["seed"].nunique()) if not mine.empty else 0,
                     "measurements": len(mine), "ratio_min": min(ratios) if ratios else math.nan,
                     "ratio_max": max(ratios) if ratios else math.nan,
                     "verdict": verdict(c.id, mine), "rerun": c.rerun})
    return pd.DataFrame(rows)


def run(paths: list[str], out: str, readme: str | None = None, html: bool = False) -> dict:
    """Build the report from the runs under `paths` into `out` (Markdown) and its figures folder; with `readme`,
    put its verdict table between that file's markers too; with `html`, the same report as an HTML page beside it."""
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise L2LError(f"no such run folder: {', '.join(missing)}: pass run folders or an outputs folder")
    if readme:
        _markers(Path(readme))  # before any work
    if html and Path(out).suffix == ".html":
        raise L2LError(f"--out '{out}' would be overwritten by the HTML page: give the Markdown file (.md) to --out")
    if html and importlib.util.find_spec("markdown") is None:
        raise L2LError("--html needs Python-Markdown: pip install markdown (or make install)")
    measured = gather([Path(p) for p in paths])
    kept = against_lstm(latest(measured))
    table = summarise(kept)
    out = Path(out)
    figures = out.parent / f"{out.stem}_figures"
    text = markdown(table, kept, figures, out.parent, paths)
    skipped = measured.attrs.get("skipped", [])
    if skipped:
        text += "\n## Runs left out\n\n" + "\n".join(f"- {s}" for s in skipped) + "\n"
    write_text(out, text)
    if html:
        write_text(out.with_suffix(".html"), html_page(text))
    if readme:
        into_readme(Path(readme), table, paths, out)
    return {"command": "report", "out": str(out), "html": str(out.with_suffix(".html")) if html else None,
            "claims": len(table), "table": table,
            "measured": int((table["measurements"] > 0).sum()), "runs": int(measured["run_dir"].nunique()),
            "skipped": skipped}


STYLE = ("body{font-family:sans-serif;max-width:80em;margin:auto;padding:1em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}img{max-width:48em}pre{background:#f4f4f4}")


def html_page(text: str) -> str:
    """The Markdown report as one HTML page; its figures keep their relative paths, so it sits beside the .md."""
    import markdown as md  # Python-Markdown: tables and code blocks as the .md renders them on GitHub

    body = md.markdown(text, extensions=["tables", "fenced_code"])
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Reproduction report</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n")


def _fmt(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def verdict_table(table: pd.DataFrame) -> list[str]:
    """The report's first table (Markdown lines): claim, paper, verdict, seeds, ratio range over seeds and recipes."""
    lines = ["| claim | paper | verdict | seeds | ratio (min-max over seeds and recipes) |", "|---|---|---|---|---|"]
    for r in table.itertuples():
        span = "-" if not r.measurements else (_fmt(r.ratio_min) if r.ratio_min == r.ratio_max
                                               else f"{_fmt(r.ratio_min)}-{_fmt(r.ratio_max)}")
        lines.append(f"| {r.statement} | {r.figure} | {r.verdict} | {r.seeds} | {span} |")
    return lines


BEGIN, END = "<!-- l2l report: begin -->", "<!-- l2l report: end -->"


def into_readme(readme: Path, table: pd.DataFrame, paths: list[str], out: Path) -> None:
    """Replace what lies between the BEGIN and END markers of `readme` with the verdict table."""
    head, _, rest = _markers(readme)
    link = Path(os.path.relpath(out, readme.parent)).as_posix()
    block = [BEGIN, f"Generated by `l2l report {' '.join(paths)}` (each claim's runs, intervals and commands: "
             f"[{link}]({link})).", "",
             *verdict_table(table), END]
    write_text(readme, head + "\n".join(block) + rest)


def _markers(readme: Path) -> tuple[str, str, str]:
    """`readme` split around its marker lines: before BEGIN, between, from END's line on."""
    text = readme.read_text() if readme.is_file() else ""
    begins = [m.start() for m in re.finditer(f"^{re.escape(BEGIN)}$", text, re.M)]
    ends = [m.start() for m in re.finditer(f"^{re.escape(END)}$", text, re.M)]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        raise L2LError(f"'{readme}' needs one line '{BEGIN}' and one line '{END}' after it, where the verdict table "
                       "goes")
    return text[: begins[0]], text[begins[0] : ends[0]], text[ends[0] + len(END) :]


def markdown(table: pd.DataFrame, kept: pd.DataFrame, figures: Path, root: Path, paths: list[str]) -> str:
    """The report: a verdict table, then each claim's measurements (per seed, with intervals) and figures."""
    lines = ["# Reproduction report", "",
             f"Generated by `l2l report {' '.join(paths)}` from the run folders alone. Each ratio is the learned "
             "optimizer's mean final loss on fresh test problems over the best baseline's (SGD, RMSprop, ADAM, NAG, "
             "learning rates swept on those same problems; Appendix D's: over the plain LSTM's of the same seed and "
             "inputs on the same problems), with a 95% paired bootstrap interval over the problems; "
             f"checkpoints were chosen on validation problems. A claim is reproduced when every meta-training seed "
             f"measured lands on the claimed side, with {MIN_SEEDS} seeds or more.", "",
             *verdict_table(table)]
    if figures.exists():
        shutil.rmtree(figures)
    for r in table.itertuples():
        lines += ["", f"## {r.figure}: {r.statement}", "", f"Verdict: **{r.verdict}**. Re-run: `{r.rerun}`", ""]
        mine = kept[kept["claim"] == r.claim] if not kept.empty else kept
        if mine.empty:
            lines.append("No run yet.")
            continue
        lines += ["| seed | recipe | variant | ratio | 95% interval | learned | best baseline | problems | steps | "
                  "eval seed | data | run |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in mine.sort_values(["seed", "variant"]).itertuples():
            lines.append(f"| {m.seed} | {m.recipe} | {m.variant or '-'} | {_fmt(m.ratio)} | {_fmt(m.ratio_low)}-"
                         f"{_fmt(m.ratio_high)} | {m.learned_final_loss:.4g} | {m.best_baseline}: "
                         f"{m.best_baseline_final_loss:.4g} | {m.problems} | {m.steps} | {m.eval_seed} | {m.data} | "
                         f"`{m.run_dir}` |")
        paired = mine.dropna(subset=["vs_lstm"]).sort_values("seed")
        if len(paired):  # Appendix D: the claim is about the plain LSTM, on the same problems
            lines += ["", "Against the plain LSTM of the same seed and inputs on the same problems (mean final loss "
                      "ratio, 95% paired bootstrap interval over the problems): " + "; ".join(
                          f"seed {m.seed} **{_fmt(m.vs_lstm)}** ({_fmt(m.vs_lstm_low)}-{_fmt(m.vs_lstm_high)}; "
                          f"`{m.lstm_run}`)" for m in paired.itertuples()) + "."]
        commands = sorted({m.command for m in mine.itertuples() if m.command})
        lines += [""] + [f"    {c}" for c in commands] if commands else []
        for m in mine.drop_duplicates("figure").itertuples():
            src = Path(m.figure)
            if src.is_file():
                figures.mkdir(parents=True, exist_ok=True)
                # one file per run: a seed's recipes, and its evaluations on other problems, each kept apart
                dst = figures / f"{r.claim}-seed{m.seed}-{m.recipe}-{Path(m.run_dir).name}-{src.name}"
                shutil.copyfile(src, dst)
                lines += ["", f"![{r.claim}, seed {m.seed}, recipe {m.recipe}, {m.problems} problems of eval seed "
                              f"{m.eval_seed}]({dst.relative_to(root)})"]
    return "\n".join(lines) + "\n"
