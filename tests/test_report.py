"""`l2l report`: claims matched to run folders, verdicts with known answers, the Markdown and its figures."""

import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf
from typer.testing import CliRunner

from l2lcli.cli import app
from l2lcli.commands import experiment
from l2lcli.config import compose
from l2lcli.report.build import against_lstm, latest, run, verdict
from l2lcli.report.claims import BY_ID, CLAIMS, evaluate_claim, generalize_claims
from tests.test_cli import one_line_error


def rows(*ratios, seeds=None, eval_seed=0, problems=64, width=0.05):
    seeds = seeds if seeds is not None else list(range(len(ratios)))
    return pd.DataFrame({"seed": seeds, "ratio": list(ratios), "ratio_low": [r - width for r in ratios],
                         "ratio_high": [r + width for r in ratios], "eval_seed": eval_seed, "problems": problems})


def test_verdicts_have_known_answers():
    assert verdict("fig2", rows()) == "not yet run"
    assert verdict("fig2", rows(0.5, 0.9)) == "reproduced"
    assert verdict("fig2", rows(1.1, 1.3)) == "not reproduced"
    assert verdict("fig2", rows(0.5, 1.3)) == "mixed over seeds"
    assert verdict("fig2", rows(0.5)) == "reproduced (one seed; the report asks two)"
    assert verdict("fig2", rows(0.5, 0.97, width=0.1)) == "within noise (an interval reaches 1)"
    assert verdict("fig5-relu", rows(1.5, 1.04, width=0.1)) == "within noise (an interval reaches 1)"
    assert verdict("fig5-relu", rows(1.5, 1.2)) == "reproduced"  # the paper says the LSTM fails on ReLU nets
    # Figure 6 claims every cell: a seed with one cell lost does not hold it, whatever its other cells
    assert verdict("fig6", rows(0.5, 1.2, 0.5, 1.3, seeds=[0, 0, 1, 1])) == "not reproduced"
    assert verdict("fig6", rows(0.5, 0.6, 0.5, 1.3, seeds=[0, 0, 1, 1])) == "mixed over seeds"
    def vs_lstm(*r, width=0.05):  # Appendix D: judged on the ratio to the plain LSTM and its paired interval
        return rows(*r).assign(vs_lstm=list(r), vs_lstm_low=[x - width for x in r], vs_lstm_high=[x + width for x in r])
    assert verdict("appD-gac", vs_lstm(0.8, 0.9)) == "reproduced"
    assert verdict("appD-gac", vs_lstm(0.8, 1.1)) == "mixed over seeds"
    assert verdict("appD-gac", vs_lstm(0.8, 0.97, width=0.1)) == "within noise (an interval reaches 1)"
    assert verdict("appD-gac", vs_lstm(0.8, 0.9).assign(vs_lstm=float("nan"))).startswith("not yet run")


def test_appendix_d_is_paired_with_the_plain_lstm_of_its_seed_and_inputs_on_the_same_problems(tmp_path):
    lstm = [1.0, 2.0, 3.0, 4.0]
    runs = [("lstm", 0, lstm, 0, []),  # the default recipe's LSTM (problem inputs), and the paper's (none)
            ("paper", 0, [2.0 * x for x in lstm], 0, ["recipe=paper"]),
            ("gac", 0, [0.5 * x for x in lstm], 0, ["optimizer=lstm_gac"]),
            ("ntm", 0, [4.0, 2.0, 2.0, 2.0], 0, ["optimizer=ntm_bfgs"]),  # no problem inputs: meets the paper's
            ("gac1", 1, [0.5 * x for x in lstm], 0, ["optimizer=lstm_gac"]),
            ("lstm1", 1, [9.0] * 4, 7, [])]  # seed 1: its LSTM on other problems
    for name, seed, finals, eval_seed, overrides in runs:
        (tmp_path / name).mkdir()
        OmegaConf.save(compose([f"seed={seed}", f"eval.seed={eval_seed}", "eval.problems=4", *overrides]),
                       tmp_path / name / "config.yaml")
        (pd.DataFrame({"row": [0] * 4 + [1] * 4, "optimizer": [name] * 4 + ["adam"] * 4, "problem": [*range(4)] * 2,
                       "final_loss": finals + [9.0] * 4})
         .sample(frac=1, random_state=0).to_csv(tmp_path / name / "finals.csv", index=False))  # any row order
    claims = {"lstm": "fig2", "paper": "fig2", "lstm1": "fig2", "gac": "appD-gac", "gac1": "appD-gac",
              "ntm": "appD-ntm"}
    kept = latest(pd.DataFrame([{"claim": claims[name], "seed": seed, "recipe": "paper" if name == "paper" else "best",
                                 "variant": "", "eval_seed": eval_seed, "problems": 4, "steps": 100, "ratio": 0.1,
                                 "run_dir": str(tmp_path / name)} for name, seed, _, eval_seed, _ in runs]))
    assert len(kept) == len(runs)  # both recipes' LSTMs stay
    out = against_lstm(kept).set_index(["claim", "seed"])
    assert out.loc[("appD-gac", 0), ["vs_lstm", "vs_lstm_low", "vs_lstm_high"]].tolist() == [0.5, 0.5, 0.5]
    assert out.loc[("appD-gac", 0), "lstm_run"].endswith("lstm")
    assert out.loc[("appD-ntm", 0), "vs_lstm"] == 0.5 and out.loc[("appD-ntm", 0), "lstm_run"].endswith("paper")
    assert out.loc[("appD-ntm", 0), "vs_lstm_high"] > 1
    assert math.isnan(out.loc[("appD-gac", 1), "vs_lstm"])
    assert verdict("appD-ntm", out.loc[["appD-ntm"]].reset_index()).startswith("within noise")
    assert verdict("appD-gac", out.loc[["appD-gac"]].reset_index()) == "reproduced (one seed; the report asks two)"


def test_runs_are_matched_to_the_claims_they_speak_to():
    paper = {"name": "mnist", "hidden": 20, "layers": 1, "activation": "sigmoid", "classes": None}
    assert evaluate_claim(paper, "lstm", 100, 100) == "fig4"
    assert evaluate_claim(paper, "lstm", 1000, 100) == "long-mnist-1000"
    assert evaluate_claim({**paper, "hidden": 40}, "lstm", 100, 100) is None  # generalize's, not Figure 4's
    assert evaluate_claim({"name": "quadratic"}, "ntm_bfgs", 100, 100) == "appD-ntm"
    assert evaluate_claim({"name": "quadratic"}, "lstm", 10000, 100) == "long-quad-10000"
    assert evaluate_claim({"name": "cifar", "classes": "cifar2"}, "lstm", 100, 100) == "fig7-2"
    assert generalize_claims("figure5", {"activation": "relu"}) == ["fig5-relu"]
    assert generalize_claims("figure6", {"layers": 2, "hidden": 80}) == ["fig6"]
    assert generalize_claims("figure8", {"style": "/my/painting.png"}) == ["fig8-style"]
    assert len({c.id for c in CLAIMS}) == len(CLAIMS) == 19


def test_the_latest_run_is_the_newest_folder_name_whatever_output_folder_holds_it():
    """Run folders are <date>-<time>-<optimizer>: a newer run in outputs/a beats an older one in outputs/z."""
    rows = pd.DataFrame([{"claim": "fig2", "seed": 0, "recipe": "best", "variant": None, "steps": 100, "problems": 256,
                          "eval_seed": 0, "ratio": r, "run_dir": d} for r, d in [
                              (0.5, "outputs/z/evaluate/quadratic/20261127-223944-lstm"),
                              (0.2, "outputs/a/evaluate/quadratic/20261128-073017-lstm"),
                              (0.9, "outputs/a/evaluate/quadratic/20261126-101010-lstm")]])
    assert latest(rows)["ratio"].tolist() == [0.2]
    assert len(latest(rows.assign(seed=[0, 1, 2]))) == 3  # one per seed


def test_a_rule_meta_trained_on_a_task_family_is_no_evidence_for_the_papers_claims(make_cfg, tmp_path):
    experiment.run(make_cfg("task.family={dim:[5,10,20]}", "train.validation_batches=2"))
    r = run([str(tmp_path / "outputs")], str(tmp_path / "report.md"))
    assert r["table"].set_index("claim").loc["fig2", "seeds"] == 0
    assert len(r["skipped"]) == 1 and "meta-trained on a family of tasks" in r["skipped"][0]


def test_a_rule_meta_trained_on_another_horizon_is_no_evidence_for_the_papers_claims(make_cfg, tmp_path):
    """Evaluated at task.steps, a rule meta-trained on longer trajectories (train.horizon) would pass for one
    trained on the task's horizon: Figure 4's "beyond its training" rows would be no such thing."""
    experiment.run(make_cfg("task.steps=4", "train.horizon=8", "train.unroll=4"))
    r = run([str(tmp_path / "outputs")], str(tmp_path / "report.md"))
    assert r["table"].set_index("claim").loc["fig2", "seeds"] == 0
    assert len(r["skipped"]) == 1 and "meta-trained on 8-step trajectories" in r["skipped"][0]


def test_a_report_of_two_seeds_from_run_folders_alone(make_cfg, tmp_path):
    measured, learned_rows = {}, []
    for seed in (0, 1):
        r = experiment.run(make_cfg(f"seed={seed}", "optimizer=lstm"))  # Figure 2's claim is the LSTM's
        learned = r["evaluate"]["table"].iloc[0]
        measured[seed] = learned["ratio_to_best_baseline"]
        learned_rows.append({"seed": seed, "ratio": learned["ratio_to_best_baseline"], "eval_seed": 0,
                             "problems": 32, "ratio_low": learned["ratio_low"], "ratio_high": learned["ratio_high"]})
    out = tmp_path / "docs" / "report.md"
    r = run([str(tmp_path / "outputs")], str(out))
    fig2 = r["table"].set_index("claim").loc["fig2"]
    assert fig2["seeds"] == 2 and fig2["ratio_min"] == min(measured.values())
    expected = verdict("fig2", pd.DataFrame(learned_rows))
    assert fig2["verdict"] == expected and expected != "not yet run"
    text = out.read_text()
    assert f"| {expected} | 2 |" in text and "not yet run" in text  # the other claims are listed, not dropped
    for ratio in measured.values():
        assert f"| {ratio:.3f} |" in text
    [figure] = (out.parent / "report_figures").glob("fig2-seed0-best-*-curves.png")  # named after its run too
    assert f"](report_figures/{figure.name})" in text

    # a run whose checkpoint is gone is left out, and said so
    shutil.rmtree(next((tmp_path / "outputs" / "meta-train" / "quadratic").iterdir()))
    r = run([str(tmp_path / "outputs")], str(out))
    assert r["table"].set_index("claim").loc["fig2", "seeds"] == 1 and len(r["skipped"]) == 1
    assert "## Runs left out" in out.read_text()

    res = CliRunner().invoke(app, ["report", str(tmp_path / "outputs"), "--out", str(tmp_path / "r.md"), "--html"])
    assert res.exit_code == 0 and "1 of 19 claims measured" in res.output
    page = (tmp_path / "r.html").read_text()  # the same report as a page: its tables and figures, not raw Markdown
    tables = re.findall(r"^\|(?:-+\|)+$", (tmp_path / "r.md").read_text(), re.M)  # a separator line per table
    assert page.count("<table>") == len(tables) > 1
    one_line_error(CliRunner().invoke(app, ["report", str(tmp_path / "outputs"), "--out", str(tmp_path / "r.html"),
                                            "--html"]), "would be overwritten by the HTML page")
    img = re.search(r'<img alt="[^"]*" src="([^"]+)"', page)
    assert img and (tmp_path / img.group(1)).is_file() and "| claim |" not in page
    readme = tmp_path / "README.md"  # the README's results table comes from the report, between two markers
    readme.write_text("# x\n\nbefore\n<!-- l2l report: begin -->\nold table\n<!-- l2l report: end -->\nafter\n")
    for _ in range(2):
        res = CliRunner().invoke(app, ["report", str(tmp_path / "outputs"), "--out", str(tmp_path / "docs" / "r.md"),
                                       "--readme", str(readme)])
        assert res.exit_code == 0, res.output
    text = readme.read_text()
    assert "old table" not in text and text.count("| claim | paper | verdict |") == 1 and "(docs/r.md)" in text
    assert text.startswith("# x\n\nbefore\n<!-- l2l report: begin -->") and text.endswith("end -->\nafter\n")
    assert f"| {BY_ID['fig2'].statement} | Figure 2 | {verdict('fig2', pd.DataFrame(learned_rows[1:]))} | 1 |" in text
    readme.write_text("no markers\n")
    one_line_error(CliRunner().invoke(app, ["report", str(tmp_path / "outputs"), "--out", str(tmp_path / "r.md"),
                                            "--readme", str(readme)]), "needs one line '<!-- l2l report: begin -->'")
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "no such run folder" in res.output


def test_every_run_folder_keeps_the_command_that_made_it(make_cfg, monkeypatch):
    from l2lcli import runs
    from l2lcli.commands import train

    monkeypatch.setattr(runs, "COMMAND_LINE", "l2l meta-train seed=3")
    run_dir = Path(train.run(make_cfg())["run_dir"])
    assert (run_dir / "command.txt").read_text() == "l2l meta-train seed=3\n"
    assert json.loads((run_dir / "summary.json").read_text())["command"] == "meta-train"
