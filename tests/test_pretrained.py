"""Rules shipped inside the package: their cards, `l2l pretrained [add]`, `--pretrained`, TorchOptimizer.pretrained."""

import json

import pytest
import torch
from typer.testing import CliRunner

from l2lcli import pretrained
from l2lcli.cli import app
from l2lcli.commands import experiment
from l2lcli.config import group_choices
from l2lcli.errors import L2LError
from l2lcli.optimizers.torch_optim import TorchOptimizer
from l2lcli.runs import load_checkpoint, load_rule
from tests.conftest import TINY

CARD = {"name", "task", "optimizer", "recipe", "data", "code_version", "shipped", "meta_training", "test", "sources"}


def test_add_ships_an_experiments_rule_with_a_card_of_its_measured_figures(make_cfg, tmp_path):
    r = experiment.run(make_cfg())
    ev, trained = r["evaluate"], r["meta-train"]
    card = pretrained.add(ev["run_dir"], "tiny", tmp_path)
    assert pretrained.names(tmp_path) == ["tiny"] and pretrained.card("tiny", tmp_path) == card
    learned = ev["table"][ev["table"]["learned"]].iloc[0]
    assert card["test"]["ratio"] == learned["ratio_to_best_baseline"]
    assert card["test"]["ratio_95"] == [learned["ratio_low"], learned["ratio_high"]]
    assert card["test"]["final_loss"] == learned["final_loss"] and card["test"]["eval_seed"] == 0
    assert card["meta_training"]["seconds"] == trained["seconds"] and card["meta_training"]["epochs"] == 2
    shipped, original = load_rule(tmp_path / "tiny.pt"), load_rule(trained["checkpoint"])
    assert all(torch.equal(a, b) for a, b in zip(shipped.state_dict().values(), original.state_dict().values(),
                                                 strict=True))
    assert "meta_optimizer" not in torch.load(tmp_path / "tiny.pt", weights_only=True)  # weights and config only

    res = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "tiny.pt"), *_tiny(make_cfg)])
    assert res.exit_code == 0, res.output
    assert f"{learned['final_loss']:.4g}" in res.output  # the same problems, the same figure

    with pytest.raises(L2LError, match="not a finished evaluate run|is a meta-train run"):
        pretrained.add(trained["run_dir"], "x", tmp_path)
    with pytest.raises(L2LError, match="letters, digits"):
        pretrained.add(ev["run_dir"], "no good", tmp_path)


def test_a_fine_tuned_rules_card_counts_the_runs_it_started_from(make_cfg, tmp_path):
    from l2lcli.commands import train
    first = train.run(make_cfg())
    r = experiment.run(make_cfg(f"train.init_from={first['run_dir']}"))
    card = pretrained.add(r["evaluate"]["run_dir"], "tuned", tmp_path)["meta_training"]
    assert card["init_from"] == [{"run": first["run_dir"], "seconds": first["seconds"]}]
    assert card["seconds_with_init"] == pytest.approx(r["meta-train"]["seconds"] + first["seconds"])
    again = experiment.run(make_cfg(f"train.init_from={tmp_path / 'tuned.pt'}"))  # from a shipped rule: its card
    card = pretrained.add(again["evaluate"]["run_dir"], "twice", tmp_path)["meta_training"]
    assert card["init_from"] == [{"run": str(tmp_path / "tuned.pt"), "seconds": pytest.approx(
        r["meta-train"]["seconds"] + first["seconds"])}]
    assert pretrained.card("twice", tmp_path)["meta_training"]["seconds_with_init"] > card["seconds"]


def test_an_evaluation_without_swept_baselines_is_not_shipped(make_cfg, tmp_path):
    from l2lcli.commands import evaluate, train
    ckpt = train.run(make_cfg())["checkpoint"]
    run = evaluate.run(make_cfg(f"eval.checkpoint={ckpt}"))["run_dir"]
    with pytest.raises(L2LError, match="against swept baselines"):
        pretrained.add(run, "x", tmp_path)


def _tiny(make_cfg):
    return [f"out_dir={make_cfg().out_dir}", "eval.problems=32", "task.steps=20", "device.compile=false"]


def test_every_task_ships_a_rule_with_a_complete_card_that_loads():
    assert set(pretrained.names()) >= set(group_choices("task"))
    for c in pretrained.cards():
        assert CARD <= set(c) and c["task"] in group_choices("task") and c["test"]["eval_seed"] is not None
        assert c["test"]["problems"] >= 8 and c["meta_training"]["seconds"] > 0
        ckpt = load_checkpoint(pretrained.path(c["name"]))
        assert ckpt["task"] == c["task"] and ckpt["code_version"] == c["code_version"]
        load_rule(pretrained.path(c["name"]))  # builds and loads with this code


def test_the_cli_lists_evaluates_and_refuses(make_cfg, tmp_path):
    runner = CliRunner()
    listed = runner.invoke(app, ["pretrained"])
    assert listed.exit_code == 0 and all(n in listed.output for n in pretrained.names())
    res = runner.invoke(app, ["evaluate", "--pretrained", "quadratic", f"out_dir={tmp_path}", "eval.problems=8",
                              "device.compile=false"])
    assert res.exit_code == 0, res.output
    summary = json.loads(next((tmp_path / "evaluate" / "quadratic").glob("*/summary.json")).read_text())
    assert summary["checkpoint"] == str(pretrained.path("quadratic"))
    tuned = runner.invoke(app, ["meta-train", "--pretrained", "quadratic", f"out_dir={tmp_path}", *TINY])
    assert tuned.exit_code == 0, tuned.output  # fine-tuning starts from the shipped weights
    saved = next((tmp_path / "meta-train" / "quadratic").glob("*/config.yaml")).read_text()
    assert f"init_from: {pretrained.path('quadratic')}" in saved
    for args, message in ((["--pretrained", "nope"], "no pretrained rule 'nope'"),
                          (["--pretrained", "quadratic", "--checkpoint", "x"], "not both")):
        res = runner.invoke(app, ["evaluate", *args, f"out_dir={tmp_path}"])
        assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1


def test_torch_optimizer_pretrained_minimises_a_quadratic_it_never_saw():
    torch.manual_seed(0)
    W, y = torch.randn(10, 10), torch.randn(10)
    theta = torch.nn.Parameter(torch.randn(10))
    opt = TorchOptimizer.pretrained("quadratic", [("theta", theta)])
    losses = []
    for _ in range(100):
        opt.zero_grad()
        loss = ((W @ theta - y) ** 2).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
