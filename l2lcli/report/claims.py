"""The paper's claims, and which measured ratio (an evaluate row or a generalize variant) speaks to each.

A claim is about the learned optimizer's mean final loss on fresh test problems against the best baseline tuned on
those same problems: `better` claims expect a ratio below 1, Figure 5's ReLU net (where the paper says the LSTM
fails) one above 1, Appendix D's a mean final loss below the plain LSTM's of the same seed on the same problems
(their ratio below 1, with its paired interval).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Claim:
    id: str
    figure: str
    statement: str
    expect: str      # "better" (ratio < 1) | "worse" (ratio > 1) | "beats lstm" (ratio to the plain LSTM < 1)
    rerun: str       # from scratch; RUN stands for the meta-train run folder, SWEEP for a sweep-baselines one


CLAIMS = (
    Claim("fig2", "Figure 2", "Quadratics (10-d, 100 steps): the LSTM beats SGD, RMSprop, ADAM and NAG, each tuned",
          "better", "l2l experiment task=quadratic optimizer=lstm seed=S"),
    Claim("fig4", "Figure 4", "MNIST MLP (784-20-10 sigmoid, 100 steps): the LSTM beats the tuned baselines",
          "better", "l2l experiment task=mnist seed=S"),
    Claim("fig4-200", "Figure 4", "MNIST, run for 200 steps (trained on 100): still better", "better",
          "l2l generalize --checkpoint RUN generalize.figure=figure5"),
    Claim("fig5-40", "Figure 5", "MNIST MLP with 40 hidden units (trained on 20): still better", "better",
          "l2l generalize --checkpoint RUN generalize.figure=figure5"),
    Claim("fig5-2layers", "Figure 5", "MNIST MLP with 2 hidden layers (trained on 1): still better", "better",
          "l2l generalize --checkpoint RUN generalize.figure=figure5"),
    Claim("fig5-relu", "Figure 5", "MNIST MLP with ReLU (trained on sigmoid): the LSTM fails, worse than the baselines",
          "worse", "l2l generalize --checkpoint RUN generalize.figure=figure5"),
    Claim("fig6", "Figure 6", "MNIST MLPs of 1-3 layers x 5-80 units: better on every width and depth", "better",
          "l2l generalize --checkpoint RUN generalize.figure=figure6"),
    Claim("fig7-10", "Figure 7", "CIFAR-10 conv net with batch norm (two LSTMs): better", "better",
          "l2l experiment task=cifar seed=S"),
    Claim("fig7-5", "Figure 7", "CIFAR-5 (labels 0-4; trained on all ten): better", "better",
          "l2l generalize --checkpoint RUN --sub SUB generalize.figure=figure7"),
    Claim("fig7-2", "Figure 7", "CIFAR-2 (labels 0-1; trained on all ten): better", "better",
          "l2l generalize --checkpoint RUN --sub SUB generalize.figure=figure7"),
    Claim("fig7-sub", "Figure 7", "LSTM-sub (trained on the held-out labels only) on CIFAR-5 and CIFAR-2: better",
          "better", "l2l meta-train task=cifar task.classes=heldout5 seed=S, then generalize --sub"),
    Claim("fig8-64", "Figure 8", "Neural art, 64x64 images and the training style: better", "better",
          "l2l experiment task=art seed=S"),
    Claim("fig8-128", "Figure 8", "Neural art at 128x128 (trained at 64x64): better", "better",
          "l2l generalize --checkpoint RUN generalize.figure=figure8"),
    Claim("fig8-style", "Figure 8", "Neural art with a new style: better", "better",
          "l2l generalize --checkpoint RUN generalize.figure=figure8"),
    Claim("appD-gac", "Appendix D", "LSTM+GAC on quadratics: better than the plain LSTM", "beats lstm",
          "l2l experiment task=quadratic optimizer=lstm_gac seed=S; "
          "l2l experiment task=quadratic optimizer=lstm seed=S"),
    Claim("appD-ntm", "Appendix D", "NTM-BFGS on quadratics: better than the plain LSTM", "beats lstm",
          "l2l experiment task=quadratic optimizer=ntm_bfgs seed=S; "
          "l2l experiment task=quadratic recipe=paper seed=S"),
    Claim("long-quad-1000", "beyond the paper", "Quadratics at 1,000 steps (trained on 100): reaches the loss, no "
          "blow-up, against baselines swept at 1,000 steps", "better",
          "l2l sweep-baselines task=quadratic eval.steps=1000; l2l evaluate --checkpoint RUN --baselines SWEEP "
          "eval.steps=1000"),
    Claim("long-quad-10000", "beyond the paper", "Quadratics at 10,000 steps (trained on 100)", "better",
          "l2l sweep-baselines task=quadratic eval.steps=10000; l2l evaluate --checkpoint RUN --baselines SWEEP "
          "eval.steps=10000"),
    Claim("long-mnist-1000", "beyond the paper", "MNIST at 1,000 steps (trained on 100)", "better",
          "l2l sweep-baselines task=mnist eval.steps=1000; l2l evaluate --checkpoint RUN --baselines SWEEP "
          "eval.steps=1000"),
)
BY_ID = {c.id: c for c in CLAIMS}
PAPER_MLP = {"hidden": 20, "layers": 1, "activation": "sigmoid"}


def evaluate_claim(task: dict, optimizer: str, steps: int, trained_steps: int) -> str | None:
    """The claim an evaluate run's learned row speaks to (None: none of the paper's)."""
    name = task["name"]
    if name == "quadratic" and steps == trained_steps:
        return {"lstm": "fig2", "lstm_gac": "appD-gac", "ntm_bfgs": "appD-ntm"}.get(optimizer)
    if optimizer != "lstm":
        return None
    if name == "quadratic":
        return {1000: "long-quad-1000", 10000: "long-quad-10000"}.get(steps)
    if name == "mnist" and all(task.get(k) == v for k, v in PAPER_MLP.items()) and task.get("classes") is None:
        return {trained_steps: "fig4", 200: "fig4-200", 1000: "long-mnist-1000"}.get(steps)
    if name == "cifar" and steps == trained_steps:
        return {None: "fig7-10", "cifar5": "fig7-5", "cifar2": "fig7-2"}.get(task.get("classes"))
    if name == "art" and steps == trained_steps:
        return "fig8-64"
    return None


def generalize_claims(figure: str, variant: dict) -> list[str]:
    """The claims a generalize row speaks to: {key: value} is the variant."""
    one = {("figure5", "hidden", 40): "fig5-40", ("figure5", "layers", 2): "fig5-2layers",
           ("figure5", "activation", "relu"): "fig5-relu", ("figure5", "steps", 200): "fig4-200",
           ("figure7", "classes", None): "fig7-10", ("figure7", "classes", "cifar5"): "fig7-5",
           ("figure7", "classes", "cifar2"): "fig7-2", ("figure8", "size", 128): "fig8-128",
           ("figure8", "size", 64): "fig8-64", ("figure8", "style", "brick"): "fig8-style"}
    if figure == "figure6":
        return ["fig6"]
    if figure == "figure8" and "style" in variant:
        return ["fig8-style"]  # any style other than the training one is a new style
    return [one[(figure, k, v)] for k, v in variant.items() if (figure, k, v) in one][:1]
