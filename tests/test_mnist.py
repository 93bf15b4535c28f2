"""The MNIST experiment end to end on tiny IDX files: meta-train, evaluate, the generalization suite."""

from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from l2lcli.cli import app
from tests.test_data import idx_root  # noqa: F401  (fixture)

MNIST_TINY = ["task=mnist", "device.compile=false", "task.hidden=3", "task.steps=6", "train.unroll=3",
              "task.minibatch=8", "train.batch_size=2",
              "train.epoch_trajectories=2", "train.max_epochs=1", "train.validation_problems=2", "eval.problems=3",
              "sweep.lr_num=2", "sweep.optimizers=[sgd,adam]", "generalize.figure6.hidden=[5,10]",
              "generalize.figure6.layers=[1,2]"]


def test_mnist_meta_train_evaluate_generalize(tmp_path, idx_root):  # noqa: F811
    runner = CliRunner()
    common = [f"out_dir={tmp_path}", f"data.root={idx_root}", *MNIST_TINY]
    res = runner.invoke(app, ["meta-train", *common])
    assert res.exit_code == 0, res.output
    run = next((tmp_path / "meta-train" / "mnist").iterdir())
    summary = pd.read_json(run / "summary.json", typ="series")
    assert summary["data"]["source"] == "idx" and summary["data"]["test_images"] == 30

    small = "generalize.figure5=[{hidden: 4}, {layers: 2}, {activation: relu}, {steps: 12}]"
    res = runner.invoke(app, ["generalize", "--checkpoint", str(run), *common, small])
    assert res.exit_code == 0, res.output
    out = next((tmp_path / "generalize" / "mnist").iterdir())
    table = pd.read_csv(out / "generalize.csv")
    assert list(table["variant"]) == ["hidden=4", "layers=2", "activation=relu", "steps=12"]
    assert set(table["verdict"]) <= {"learned better", "baseline better"}
    assert (table["ratio"] - table["learned_final_loss"] / table["best_baseline_final_loss"]).abs().max() < 1e-9
    curves = pd.read_csv(out / "curves.csv")
    assert curves.loc[curves["variant"] == "steps=12", "step"].max() == 12
    assert Path(out / "figure5.png").stat().st_size > 1000

    res = runner.invoke(app, ["generalize", "--checkpoint", str(run), *common, "generalize.figure=figure6"])
    assert res.exit_code == 0, res.output
    out = sorted((tmp_path / "generalize" / "mnist").iterdir())[-1]
    assert len(pd.read_csv(out / "generalize.csv")) == 4 and (out / "figure6.png").is_file()


def test_relu_and_two_layers_are_plain_overrides(tmp_path, idx_root):  # noqa: F811
    res = CliRunner().invoke(app, ["sweep-baselines", f"out_dir={tmp_path}", f"data.root={idx_root}", *MNIST_TINY,
                                   "task.activation=relu", "task.layers=2", "task.hidden=40"])
    assert res.exit_code == 0, res.output
    cfg = next((tmp_path / "sweep-baselines" / "mnist").iterdir()) / "config.yaml"
    text = cfg.read_text()
    assert "activation: relu" in text and "layers: 2" in text and "hidden: 40" in text


def test_figure5_defaults_are_the_papers_variants(make_cfg):
    cfg = make_cfg("task=mnist")
    assert [dict(v) for v in cfg.generalize.figure5] == [{"hidden": 40}, {"layers": 2}, {"activation": "relu"},
                                                          {"steps": 200}]
