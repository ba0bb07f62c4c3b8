"""The toy experiment's three figures, drawn from the results tables with matplotlib (Agg, PNG)."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lorakit.toy.analysis import fitted_exponent  # noqa: E402

INIT_STYLE = {"A": {"color": "tab:blue", "marker": "o"}, "B": {"color": "tab:orange", "marker": "s"}}


def width_colors(widths) -> dict:
    widths = sorted(widths)
    cmap = plt.get_cmap("viridis")
    return {w: cmap(k / max(1, len(widths) - 1)) for k, w in enumerate(widths)}


def loss_vs_lr(summary: pd.DataFrame, best: pd.DataFrame, path: Path, title: str) -> None:
    """Final train loss (top) and test loss (bottom) against lr, mean ± std over seeds, one curve per width, one
    column per init; an x marks an lr at which some seed went unstable (clipped to the top edge), a triangle the
    optimal grid lr. Both losses are divided by the initial train loss, so widths share one scale."""
    inits = sorted(summary["init"].unique())
    colors = width_colors(summary["width"].unique())
    fig, axes = plt.subplots(2, len(inits), figsize=(5.2 * len(inits), 7.6), sharex=True, sharey=True, squeeze=False)
    for row, loss in enumerate(("train_loss", "test_loss")):
        for ax, init in zip(axes[row], inits, strict=True):
            draw_loss_curves(ax, summary[summary["init"] == init], best[best["init"] == init], loss, colors)
            ax.set(xscale="log", yscale="log", ylim=(None, 10.0), title=f"Init[{init}]" if row == 0 else None)
            ax.grid(True, which="major", alpha=0.3)
        axes[row][0].set_ylabel(f"final {loss.replace('_', ' ')} / initial train loss")
    for ax in axes[1]:
        ax.set_xlabel("learning rate (of A; B's is LoRA+ ratio × lr)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def draw_loss_curves(ax, summary: pd.DataFrame, best: pd.DataFrame, loss: str, colors: dict) -> None:
    for width, part in summary.groupby("width"):
        part = part.sort_values("lr")
        rel = (part[loss] / part["initial_loss"]).clip(upper=10.0)
        ax.plot(part["lr"], rel, color=colors[width], label=f"n = {width}", lw=1.5)
        bad = part["unstable_fraction"] > 0
        if loss == "train_loss":
            spread = part["train_loss_std"].fillna(0) / part["initial_loss"]
            ax.fill_between(part["lr"], (rel - spread).clip(lower=rel * 0.1), (rel + spread).clip(upper=10.0),
                            where=~bad, color=colors[width], alpha=0.15, lw=0)  # fmt: skip
        ax.scatter(part["lr"][bad], rel[bad], marker="x", color=colors[width], s=18, zorder=3)
        at = part["lr"].isin(best[best["width"] == width]["best_grid_lr"])
        ax.scatter(part["lr"][at], rel[at], marker="v", color=colors[width], s=40, zorder=4, edgecolor="black", lw=0.5)


def optimal_lr_vs_width(best: pd.DataFrame, path: Path, title: str) -> None:
    """Optimal lr against width on log–log axes, with fitted slopes and n^-1, n^-1/2 reference lines."""
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    widths = np.array(sorted(best["width"].unique()), dtype=float)
    for init, part in best.groupby("init"):
        part = part.sort_values("width")
        style = INIT_STYLE.get(init, {})
        label = f"Init[{init}]"
        if len(part) > 1:
            slope = fitted_exponent(part["width"], part["optimal_lr"])
            fit = np.polyfit(np.log(part["width"]), np.log(part["optimal_lr"]), 1)
            ax.plot(widths, np.exp(np.polyval(fit, np.log(widths))), color=style.get("color"), lw=1, alpha=0.7)
            label += f" (fitted slope {slope:+.2f})"
        ax.plot(part["width"], part["optimal_lr"], ls="none", ms=7, label=label, **style)
    anchor = best[best["width"] == widths[0]]["optimal_lr"]
    anchor = float(np.exp(np.log(anchor).mean()))
    for power, dash in ((-1.0, (4, 2)), (-0.5, (1, 2))):
        ax.plot(widths, anchor * (widths / widths[0]) ** power, color="gray", dashes=dash, lw=1,
                label=f"n^{power:g} reference")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="width n", ylabel="optimal learning rate", title=title)
    ax.set_xticks(widths, [str(int(w)) for w in widths])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def feature_norms(curves: pd.DataFrame, best: pd.DataFrame, path: Path, title: str) -> None:
    """RMS of Z_A and Z_B over training (mean over seeds) at the smallest and largest width, each init at its
    optimal grid lr."""
    widths = sorted(best["width"].unique())
    shown = sorted({widths[0], widths[-1]})
    colors = {w: c for w, c in zip(shown, ("tab:green", "tab:purple"), strict=False)}
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.2))
    for (init, width), row in best.set_index(["init", "width"]).iterrows():
        if width not in shown:
            continue
        lr = row["best_grid_lr"]
        part = curves[(curves["init"] == init) & (curves["width"] == width) & np.isclose(curves["lr"], lr)]
        mean = part.groupby("step")[["rms_z_a", "rms_z_b"]].mean()
        for ax, column in zip(axes, ("rms_z_a", "rms_z_b"), strict=True):
            ax.plot(mean.index, mean[column], color=colors[width], ls="-" if init == "A" else "--",
                    label=f"Init[{init}], n = {width}, lr = {lr:.2g}")  # fmt: skip
    for ax, name in zip(axes, ("RMS of Z_A = A·φ(Y_in)", "RMS of Z_B = (α/r)·B·Z_A"), strict=True):
        ax.set(yscale="log", xlabel="step", title=name)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
