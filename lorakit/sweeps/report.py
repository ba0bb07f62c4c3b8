"""The report of a finished sweep: summary tables and the paper's figures, from ``results.csv`` alone.

- ``summary.csv``: per task × init × lr × ratio, the mean, std and count over seeds of the final metric (done runs),
  and how many runs diverged or failed.
- ``best.csv``: per task × ratio × init, the best learning rate by mean metric (among lrs where every seed finished
  without diverging) and its mean ± std, with the gap between the inits (Init[A] − Init[B], in the metric's units).
- ``metric_vs_lr.png``: metric against learning rate (log x), one curve per init with ±1 std error bars, one panel per
  task; learning rates where a run diverged or failed are marked ×.
- ``ratio_lr_heatmap.png`` (when the sweep has several LoRA+ ratios): mean metric over ratio × lr, one panel per init.
- ``dynamics.csv`` and ``dynamics_vs_lr.png`` (when the runs measured their dynamics, --lora_diagnostics_steps): per
  task × init × lr × ratio, the mean over the seeds that finished (status done) of the last measured step's RMS Z_A,
  Z_B, δ¹, δ² (and the rest of the diagnostics), and those four against learning rate, one curve per init (and
  LoRA+ ratio, when the sweep has several): the paper's norm figure, for the sweep's model.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lorakit.core.atomic import write_csv_atomic  # noqa: E402
from lorakit.core.errors import ConfigError  # noqa: E402
from lorakit.dynamics.figures import plot_final_vs_lr  # noqa: E402

INIT, LR, RATIO, TASK = "lora_init", "learning_rate", "loraplus_lr_ratio", "task_name"
COLOURS = {"A": "tab:blue", "B": "tab:orange"}


def with_defaults(results: pd.DataFrame, fixed: dict, grid_keys: list[str]) -> pd.DataFrame:
    """The task, init, lr and ratio columns the grid left out, filled with the sweep's fixed values. Grid keys other
    than these and the seed (``lora_r``, …) join the task label, so runs that differ in them are never averaged."""
    frame = results.copy()
    defaults = {INIT: "A", RATIO: 1, TASK: "task", LR: "fixed"} | fixed
    for column, value in defaults.items():
        frame[column] = frame[column].fillna(value) if column in frame else value
    frame[RATIO] = frame[RATIO].fillna(1)
    for key in [k for k in grid_keys if k not in (TASK, INIT, LR, RATIO, "seed") and k in frame]:
        frame[TASK] = frame[TASK].astype(str) + f" {key}=" + frame[key].astype(str)
    return frame


def summarize(results: pd.DataFrame, metric: str) -> pd.DataFrame:
    keys = [TASK, INIT, LR, RATIO]
    column = f"final_{metric}"
    if column not in results:
        results = results.assign(**{column: np.nan})
    done = results[results["status"] == "done"]
    stats = done.groupby(keys)[column].agg(mean="mean", std="std", seeds="count") if len(done) else None
    counts = (
        results.assign(diverged=results["status"].eq("diverged"), failed=results["status"].eq("failed"))
        .groupby(keys)[["diverged", "failed"]]
        .sum()
    )
    summary = counts.join(stats, how="left") if stats is not None else counts.assign(mean=np.nan, std=np.nan, seeds=0)
    summary["seeds"] = summary["seeds"].fillna(0).astype(int)
    return summary.reset_index()[[*keys, "mean", "std", "seeds", "diverged", "failed"]]


def best_learning_rates(summary: pd.DataFrame, higher_is_better: bool) -> pd.DataFrame:
    """Per task × ratio × init, the lr with the best mean among lrs where no seed diverged or failed (any lr, if
    every lr lost a seed). ``gap_A_minus_B`` is Init[A]'s best mean minus Init[B]'s, in the metric's units (for a
    lower-is-better metric such as perplexity, a negative gap favours Init[A])."""
    rows = []
    for (task, ratio), group in summary.dropna(subset=["mean"]).groupby([TASK, RATIO]):
        best = {}
        for init, by_init in group.groupby(INIT):
            clean = by_init[(by_init["diverged"] + by_init["failed"]) == 0]
            by_init = clean if len(clean) else by_init
            pick = by_init.loc[by_init["mean"].idxmax() if higher_is_better else by_init["mean"].idxmin()]
            best[init] = pick
            rows.append(
                {TASK: task, RATIO: ratio, INIT: init, "best_lr": pick[LR], "mean": pick["mean"], "std": pick["std"]}
            )
        gap = best["A"]["mean"] - best["B"]["mean"] if {"A", "B"} <= set(best) else np.nan
        for row in rows[-len(best) :]:
            row["gap_A_minus_B"] = gap
    return pd.DataFrame(rows)


def plot_metric_vs_lr(summary: pd.DataFrame, metric: str, path: Path) -> None:
    tasks = sorted(summary[TASK].unique())
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        part = summary[summary[TASK] == task]
        ratios = sorted(part[RATIO].unique())
        for init in sorted(part[INIT].unique()):
            for ratio in ratios:
                curve = part[(part[INIT] == init) & (part[RATIO] == ratio)].sort_values(LR)
                label = f"Init[{init}]" + (f", ratio {ratio:g}" if len(ratios) > 1 else "")
                style = dict(color=COLOURS.get(init), alpha=1.0 if ratio == ratios[0] else 0.5)
                ax.errorbar(
                    curve[LR],
                    curve["mean"],
                    yerr=curve["std"].fillna(0),
                    marker="o",
                    ms=4,
                    capsize=3,
                    label=label,
                    **style,
                )
                bad = curve[(curve["diverged"] + curve["failed"]) > 0]
                if len(bad):
                    floor = np.nanmin(part["mean"]) if part["mean"].notna().any() else 0
                    ax.scatter(bad[LR], [floor] * len(bad), marker="x", s=40, color=style["color"], zorder=3)
        ax.set(xscale="log", xlabel="learning rate", ylabel=metric, title=task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if ((summary["diverged"] + summary["failed"]) > 0).any():
        fig.text(0.01, 0.01, "× : a run diverged or failed at that lr", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def plot_ratio_heatmap(summary: pd.DataFrame, metric: str, path: Path) -> None:
    inits = sorted(summary[INIT].unique())
    fig, axes = plt.subplots(1, len(inits), figsize=(4.5 * len(inits), 3.4), squeeze=False)
    for ax, init in zip(axes[0], inits, strict=True):
        table = summary[summary[INIT] == init].pivot_table(index=RATIO, columns=LR, values="mean", aggfunc="mean")
        image = ax.imshow(table.values, aspect="auto", origin="lower", cmap="viridis")
        ax.set_xticks(range(len(table.columns)), [f"{v:.0e}" for v in table.columns], rotation=45, fontsize=7)
        ax.set_yticks(range(len(table.index)), [f"{v:g}" for v in table.index])
        ax.set(xlabel="learning rate", ylabel="LoRA+ ratio", title=f"Init[{init}]: {metric}")
        fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def numeric_metrics(results: pd.DataFrame) -> pd.DataFrame:
    """The metric columns as numbers: a value that is not one (a damaged metrics.json) becomes NaN and is left out of
    the means, so one bad run never stops the report."""
    frame = results.copy()
    for column in [c for c in frame if c.startswith(("final_", "best_", "before_"))]:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def check_metric(results: pd.DataFrame, metric: str) -> None:
    """A metric no finished run reports is a misspelling, not an empty report."""
    done = results[results["status"] == "done"]
    if len(done) and f"final_{metric}" not in done:
        found = sorted(c.removeprefix("final_") for c in done if c.startswith("final_"))
        raise ConfigError(f"metric: no run reports {metric!r} (they report {', '.join(found) or 'nothing'})")


def write_report(
    output_root: Path, metric: str, higher_is_better: bool, fixed: dict, grid_keys: list[str] | None = None
) -> dict:
    """Write the summary tables and figures next to ``results.csv``; `fixed` gives the values of task, init, lr
    and ratio where the grid does not vary them. Returns the written paths."""
    results = with_defaults(numeric_metrics(pd.read_csv(output_root / "results.csv")), fixed, grid_keys or [])
    check_metric(results, metric)
    summary = summarize(results, metric)
    best = best_learning_rates(summary, higher_is_better)
    paths = {"summary": output_root / "summary.csv", "best": output_root / "best.csv"}
    write_csv_atomic(summary, paths["summary"])
    write_csv_atomic(best, paths["best"])
    paths["metric_vs_lr"] = output_root / "metric_vs_lr.png"
    plot_metric_vs_lr(summary, metric, paths["metric_vs_lr"])
    if summary[RATIO].nunique() > 1:
        paths["ratio_lr_heatmap"] = output_root / "ratio_lr_heatmap.png"
        plot_ratio_heatmap(summary, metric, paths["ratio_lr_heatmap"])
    return paths | write_dynamics(results, output_root)


def write_dynamics(results: pd.DataFrame, output_root: Path) -> dict:
    """``dynamics.csv`` and ``dynamics_vs_lr.png`` (see the module docstring), when any run has diagnostics."""
    columns = [c for c in results if c.startswith("diag_")]
    measured = results.dropna(subset=["diag_rms_z_a"]) if "diag_rms_z_a" in results else results.iloc[:0]
    if "status" in measured:  # a diverged or failed run's last measurement is from another step: not comparable
        measured = measured[measured["status"] == "done"]
    if not len(measured):
        return {}
    for task, part in measured.groupby(TASK):
        steps = part["diag_step"].unique()
        if len(steps) > 1:  # finished runs of other lengths (max_steps, epochs) in one sweep
            print(f"report: {task}: the last measured steps differ across runs ({sorted(steps)})")
    table = measured.groupby([TASK, INIT, LR, RATIO])[columns].mean().reset_index()
    paths = {"dynamics": output_root / "dynamics.csv", "dynamics_vs_lr": output_root / "dynamics_vs_lr.png"}
    write_csv_atomic(table, paths["dynamics"])
    curves = [INIT, RATIO] if measured[RATIO].nunique() > 1 else [INIT]
    plot_final_vs_lr(measured.assign(**{INIT: measured[INIT].astype(str)}), paths["dynamics_vs_lr"], curves, LR, TASK)
    return paths
