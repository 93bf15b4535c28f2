"""PNG plots of learning curves and learning-rate sweeps (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .runs import atomic  # noqa: E402


def _save(fig, path: Path) -> None:
    atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def plot_curves(curves: pd.DataFrame, path: Path, title: str) -> None:
    """Mean loss vs step on a log axis; learned optimizers solid, baselines dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for (name, learned), df in curves.groupby(["optimizer", "learned"], sort=False):
        label = name if learned else f"{name} (lr {df['lr'].iloc[0]:.3g})"
        ax.plot(df["step"], df["mean_loss"], "-" if learned else "--", lw=2 if learned else 1.3, label=label)
    ax.set(yscale="log", xlabel="step", ylabel="mean loss", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    _save(fig, path)


def plot_sweep(sweep: pd.DataFrame, path: Path, title: str) -> None:
    """Mean final loss vs learning rate per baseline; diverged learning rates marked with x at the top."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    finite = sweep[~sweep["diverged"]]
    top = finite["final_loss"].max() if len(finite) else 1.0
    for name, df in sweep.groupby("optimizer", sort=False):
        ok = df[~df["diverged"]]
        (line,) = ax.plot(ok["lr"], ok["final_loss"], "o-", ms=3, label=name)
        bad = df[df["diverged"]]
        ax.plot(bad["lr"], [top] * len(bad), "x", color=line.get_color())
    ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="mean final loss (x: diverged)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    _save(fig, path)


def plot_generalization(figure: str, table: pd.DataFrame, curves: pd.DataFrame, path: Path) -> None:
    """Figures 5 and 7: learning curves per variant; Figure 6: final loss vs width, one panel per depth."""
    if figure != "figure6":
        fig, axes = plt.subplots(1, len(table), figsize=(4.2 * len(table), 3.6), squeeze=False)
        for ax, (label, df) in zip(axes[0], curves.groupby("variant", sort=False), strict=True):
            for (name, learned), d in df.groupby(["optimizer", "learned"], sort=False):
                ax.plot(d["step"], d["mean_loss"], "-" if learned else "--", label=name)
            ax.set(yscale="log", title=label, xlabel="step")
        axes[0][0].set_ylabel("mean loss")
        axes[0][0].legend()
    else:
        depths = sorted(table["layers"].unique())
        fig, axes = plt.subplots(1, len(depths), figsize=(4.2 * len(depths), 3.6), squeeze=False, sharey=True)
        for ax, d in zip(axes[0], depths, strict=True):
            t = table[table["layers"] == d].sort_values("hidden")
            ax.plot(t["hidden"], t["learned_final_loss"], "o-", label="learned")
            ax.plot(t["hidden"], t["best_baseline_final_loss"], "s--", label="best baseline")
            ax.set(xscale="log", yscale="log", xlabel="hidden units", title=f"{d} hidden layer(s)")
            ax.set_xticks(t["hidden"], [str(int(h)) for h in t["hidden"]])  # the widths, not log-scale minor ticks
            ax.minorticks_off()
        axes[0][0].set_ylabel("final loss")
        axes[0][0].legend()
    fig.tight_layout()
    _save(fig, path)


def plot_images(grid: list[list], columns: list[str], path: Path) -> None:
    """A grid of images ([3, H, W] tensors in [0, 1]): one row per problem, one titled column each."""
    rows, cols = len(grid), len(columns)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows), squeeze=False)
    for r, row in enumerate(grid):
        for c, image in enumerate(row):
            ax = axes[r][c]
            ax.imshow(image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(columns[c], fontsize=9)
    fig.tight_layout()
    _save(fig, path)
