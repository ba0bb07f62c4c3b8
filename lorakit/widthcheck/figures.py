"""The width check's figures, in the style of mup's coordinate checks: RMS of each quantity against width (or rank),
log–log, one line per step (at most 8 steps, spaced in log step; lighter: later), one panel per quantity × init
scheme × learning-rate scaling. Each panel spans at least a decade, so an exponent of 0 reads as a flat line."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lorakit.dynamics.figures import positive  # noqa: E402
from lorakit.widthcheck.fit import QUANTITIES  # noqa: E402

PANELS = ["rms_z_a", "rms_a0_x", "rms_update_x", "rms_z_b", "rms_delta1", "rms_delta2"]


def shown_steps(steps: list[int], most: int = 8) -> list[int]:
    """At most `most` of `steps`, spaced evenly in log step (always the first two and the last)."""
    if len(steps) <= most:
        return steps
    picked = {steps[0], steps[1], steps[-1]}
    for target in np.geomspace(steps[0], steps[-1], most):
        if len(picked) == most:
            break
        picked.add(min(steps, key=lambda s, target=target: abs(np.log(s) - np.log(target))))
    return sorted(picked)


def plot_against(table: pd.DataFrame, x: str, path: Path, title: str) -> Path:
    """`table` (means per setting, step and `x`, one architecture) as a grid: a row per scheme × η scaling, a column
    per quantity. A value of 0 (A_0·x under Init[B], δ¹ at step 1 under Init[A]) has no point on a log axis."""
    settings = list(table.groupby(["scheme", "lr_scaling"]).groups)
    steps = shown_steps(sorted(table["step"].unique()))
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(steps)))
    fig, axes = plt.subplots(len(settings), len(PANELS), figsize=(3.0 * len(PANELS), 2.6 * len(settings)),
                             squeeze=False, sharex=True)  # fmt: skip
    for row, (scheme, lr_scaling) in zip(axes, settings, strict=True):
        part = table[(table["scheme"] == scheme) & (table["lr_scaling"] == lr_scaling)]
        for ax, quantity in zip(row, PANELS, strict=True):
            for step, colour in zip(steps, colours, strict=True):
                line = part[part["step"] == step].sort_values(x)
                values = line[quantity].to_numpy(dtype=float)
                ax.plot(line[x], positive(values), marker="o", ms=3, color=colour, label=f"step {step}")
            shown = part[part["step"].isin(steps) & (part[quantity] > 0)][quantity]
            if len(shown):
                ax.set_yscale("log")
                low, high = shown.min(), shown.max()
                spread = 1.3 * max(1.0, np.sqrt(10 * low / high))  # at least a decade: a flat line must look flat
                ax.set_ylim(low / spread, high * spread)
            else:
                ax.text(0.5, 0.5, "no positive value (0 or NaN)", ha="center", va="center", transform=ax.transAxes)
            ax.set_xscale("log")
            ax.set_xticks(sorted(table[x].unique()), [str(v) for v in sorted(table[x].unique())], fontsize=7)
            ax.minorticks_off()
            ax.grid(alpha=0.3)
            ax.set_title(f"Init[{scheme}], η ∝ {lr_scaling}: {QUANTITIES[quantity]}", fontsize=8)
        row[0].set_ylabel("RMS")
    for ax in axes[-1]:
        ax.set_xlabel(x)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 0.965))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
