"""Figures of the diagnostics: the four RMS curves of the paper's mechanism against step, one line per run, from
run folders' `diagnostics_summary.jsonl` (`python -m lorakit.dynamics plot RUN… --out FILE`), and their final values
against learning rate, one curve per init (`plot_final_vs_lr`, in a sweep's report).

A quantity that is exactly 0 at a step (δ¹ at step 1 under Init[A], where B = 0) has no place on a log axis and is
left out of its line.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lorakit.core.errors import ConfigError  # noqa: E402
from lorakit.core.run_folder import read_json_file  # noqa: E402
from lorakit.dynamics.callback import SUMMARY, read_rows  # noqa: E402

PANELS = {  # quantity → its title
    "rms_z_a": "RMS $Z_A = A x$",
    "rms_z_b": r"RMS $Z_B = \frac{\alpha}{r} B A x$",
    "rms_delta1": "RMS $\\delta^1$\n(A's update seen through B)",
    "rms_delta2": "RMS $\\delta^2$\n(B's own update)",
}
COLOURS = {"A": "tab:blue", "B": "tab:orange"}


def run_label(folder: Path) -> tuple[str, str | None]:
    """A run's legend label (init, lr, LoRA+ ratio from its run_config.json, else its folder's name) and init."""
    config = read_json_file(folder / "run_config.json")
    training = config.get("training") if isinstance(config, dict) else None
    if not isinstance(training, dict) or not isinstance(training.get("learning_rate"), int | float):
        return folder.name, None
    init, lr = training.get("lora_init"), training["learning_rate"]
    ratio = training.get("loraplus_lr_ratio") or 1
    return f"Init[{init}] lr {lr:g}" + (f" ratio {ratio:g}" if ratio != 1 else ""), init


def summaries(folders: list[Path]) -> dict[Path, pd.DataFrame]:
    """Each folder's summary rows as a frame; a folder without any is an error naming it."""
    found = {}
    for folder in folders:
        rows = read_rows(folder, SUMMARY)
        if not rows:
            raise ConfigError(f"plot: {folder} has no {SUMMARY} (run with --lora_diagnostics_steps N)")
        found[folder] = pd.DataFrame(rows).sort_values("step")
    return found


def positive(values) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return np.where(values > 0, values, np.nan)


def plot_runs(folders: list[Path], path: Path) -> Path:
    """RMS Z_A, Z_B, δ¹ and δ² against step (log y), one line per run folder."""
    frames = summaries([Path(f) for f in folders])
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.0 * len(PANELS), 3.3), squeeze=False)
    styles, seen, labels = ["-", "--", ":", "-."], {}, [run_label(folder) for folder in frames]
    for (folder, frame), (label, init) in zip(frames.items(), labels, strict=True):
        if [lab for lab, _ in labels].count(label) > 1:  # two runs of one setting: told apart by their folders
            label = f"{label} ({folder.name})"
        style = styles[seen.get(init, 0) % len(styles)]
        seen[init] = seen.get(init, 0) + 1
        for ax, quantity in zip(axes[0], PANELS, strict=True):
            ax.plot(frame["step"], positive(frame[quantity]), marker="o", ms=3, label=label,
                    color=COLOURS.get(init), linestyle=style)  # fmt: skip
    for ax, title in zip(axes[0], PANELS.values(), strict=True):
        ax.set(yscale="log", xlabel="step", title=title)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def plot_final_vs_lr(frame: pd.DataFrame, path: Path, curves=("lora_init",), lr="learning_rate", task=None) -> Path:
    """The final-step value of each quantity (columns ``diag_<quantity>``, one row per run) against learning rate
    (log–log), the mean over the runs of each curve × lr, one curve per value of the `curves` columns (the init
    first, then, say, the LoRA+ ratio); one row of panels per `task` value."""
    groups = list(frame.groupby(task)) if task else [("", frame)]
    fig, axes = plt.subplots(len(groups), len(PANELS), figsize=(4.0 * len(PANELS), 3.3 * len(groups)), squeeze=False)
    for row, (name, part) in zip(axes, groups, strict=True):
        for ax, (quantity, title) in zip(row, PANELS.items(), strict=True):
            for number, (key, runs) in enumerate(part.groupby(list(curves))):
                means = runs.groupby(lr)[f"diag_{quantity}"].mean().sort_index()
                extra = zip(curves[1:], key[1:], strict=True)  # "loraplus_lr_ratio" → "ratio 4"
                label = f"Init[{key[0]}]" + "".join(f" {name.rsplit('_', 1)[-1]} {value:g}" for name, value in extra)
                ax.plot(means.index, positive(means.values), marker="o", ms=4, label=label,
                        color=COLOURS.get(str(key[0])) if len(curves) == 1 else f"C{number}")  # fmt: skip
            ax.set(xscale="log", yscale="log", xlabel="learning rate", title=title)
            ax.grid(alpha=0.3, which="both")
        row[0].legend(fontsize=8)
        row[0].set_ylabel(f"{name}: RMS" if name else "RMS")
    fig.suptitle("At each run's last measured step (mean over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
