"""From the per-student results table to the paper's claims: optimal learning rates, their scaling with width, and the
checks the runner prints.

The optimal lr of an (init, width) is the grid lr with the lowest train loss (mean over seeds), refined by a
parabola through log10(loss) at it and its two neighbours, and kept inside that bracket; this removes most of the
quantisation of a grid spaced by 10^0.25 without trusting anything beyond the bracket.
"""

import math

import numpy as np
import pandas as pd

from lorakit.toy.train import WidthResult


def result_rows(result: WidthResult, config_columns: dict) -> list[dict]:
    """One row per student: config columns, final train/test loss, RMS of Z_A and Z_B, the unstable flag."""
    rows = []
    for k, student in enumerate(result.students):
        rows.append({
            **config_columns,
            "width": result.width,
            "init": student.init,
            "lr": student.lr,
            "lr_b": student.lr * config_columns.get("loraplus_ratio", 1.0),
            "seed": student.seed,
            "initial_loss": result.initial_loss[k].item(),
            "train_loss": result.train_loss[k].item(),
            "test_loss": result.test_loss[k].item(),
            "rms_z_a": result.rms_z_a[k].item(),
            "rms_z_b": result.rms_z_b[k].item(),
            "diverged": bool(result.diverged_at[k] >= 0),
            "diverged_at_step": int(result.diverged_at[k]),
        })  # fmt: skip
    return rows


def curve_rows(result: WidthResult) -> list[dict]:
    """Training curves in long form: one row per student and recorded step."""
    rows = []
    for k, student in enumerate(result.students):
        for column, step in enumerate(result.curve_steps):
            values = {name: result.curves[name][k, column].item() for name in result.curves}
            if not math.isnan(values["train_loss"]):
                rows.append({"width": result.width, "init": student.init, "lr": student.lr, "seed": student.seed,
                             "step": step, **values})  # fmt: skip
    return rows


def lr_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (width, init, lr), with the fraction of seeds that went unstable."""
    grouped = table.groupby(["width", "init", "lr"], sort=True)
    summary = grouped[["train_loss", "test_loss", "rms_z_a", "rms_z_b", "initial_loss"]].mean()
    summary["train_loss_std"] = grouped["train_loss"].std()
    summary["unstable_fraction"] = grouped["diverged"].mean()
    return summary.reset_index()


def refined_minimum(log_lr: np.ndarray, log_loss: np.ndarray) -> float:
    """log10 of the optimal lr: the grid minimum moved to the vertex of the parabola through it and its neighbours."""
    best = int(np.argmin(log_loss))
    if best == 0 or best == len(log_lr) - 1:
        return float(log_lr[best])
    x, y = log_lr[best - 1 : best + 2], log_loss[best - 1 : best + 2]
    curvature, slope, _ = np.polyfit(x - x[1], y, 2)
    if curvature <= 0:
        return float(log_lr[best])
    return float(np.clip(x[1] - slope / (2 * curvature), x[0], x[2]))


def optima(summary: pd.DataFrame, criterion: str = "test_loss") -> pd.DataFrame:
    """Per (width, init): the optimal lr by `criterion` (and by the other loss, for comparison), the best train and
    test loss, RMS Z_A/Z_B at the optimal grid lr, and the largest lr at which every seed ends below its initial
    loss without going unstable."""
    other = "train_loss" if criterion == "test_loss" else "test_loss"
    rows = []
    for (width, init), part in summary.groupby(["width", "init"], sort=True):
        part = part.sort_values("lr")
        log_lr = np.log10(part["lr"].to_numpy())
        log_loss = {
            name: np.log10(part[name].clip(lower=1e-300).fillna(np.inf).to_numpy()) for name in (criterion, other)
        }
        best = part.iloc[int(np.argmin(log_loss[criterion]))]
        lowering = part[(part["train_loss"] < part["initial_loss"]) & (part["unstable_fraction"] == 0)]
        rows.append({
            "width": width,
            "init": init,
            "optimal_lr": 10 ** refined_minimum(log_lr, log_loss[criterion]),
            f"optimal_lr_by_{other}": 10 ** refined_minimum(log_lr, log_loss[other]),
            "best_grid_lr": best["lr"],
            "best_train_loss": part["train_loss"].min(),
            "best_test_loss": part["test_loss"].min(),
            "rms_z_a_at_optimum": best["rms_z_a"],
            "rms_z_b_at_optimum": best["rms_z_b"],
            "largest_lr_lowering_loss": lowering["lr"].max() if len(lowering) else float("nan"),
        })  # fmt: skip
    return pd.DataFrame(rows)


def fitted_exponent(widths, values) -> float:
    """Slope of log(values) against log(widths) by least squares."""
    return float(np.polyfit(np.log(np.asarray(widths, float)), np.log(np.asarray(values, float)), 1)[0])


def loraplus_check(best: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """With lr_B = ratio · lr_A under Init[A], RMS Z_A at the optimum should stop growing with n (|exponent| ≤ 0.2,
    the band the paper's claims use for "stays")."""
    a = best[best["init"] == "A"]
    growth = fitted_exponent(a["width"], a["rms_z_a_at_optimum"])
    claim = f"RMS Z_A at optimum ~ n^e, Init[A], LoRA+ ratio {ratio:g}"
    return pd.DataFrame(
        [{"claim": claim, "measured": f"{growth:+.2f}", "target": "-0.2 … 0.2", "pass": abs(growth) <= 0.2}]
    )


def claim_checks(best: pd.DataFrame) -> pd.DataFrame:
    """The paper's claims about Init[A] vs Init[B] (plain LoRA), each measured on `optima(...)`, marked pass/fail."""
    a = best[best["init"] == "A"].set_index("width").sort_index()
    b = best[best["init"] == "B"].set_index("width").sort_index()
    widths = a.index.intersection(b.index)
    a, b = a.loc[widths], b.loc[widths]
    rows = []

    def check(claim: str, value: str, target: str, passed: bool) -> None:
        rows.append({"claim": claim, "measured": value, "target": target, "pass": bool(passed)})

    slope_a, slope_b = fitted_exponent(widths, a["optimal_lr"]), fitted_exponent(widths, b["optimal_lr"])
    check("optimal lr ~ n^slope, Init[A]", f"{slope_a:+.2f}", "-0.5 ± 0.3", abs(slope_a + 0.5) <= 0.3)
    check("optimal lr ~ n^slope, Init[B]", f"{slope_b:+.2f}", "-1.0 ± 0.3", abs(slope_b + 1.0) <= 0.3)
    ratio = a["optimal_lr"] / b["optimal_lr"]
    large = widths >= 2048
    check("optimal lr A / B, every width", ", ".join(f"{v:.2g}" for v in ratio), "≥ 1; > 1 for n ≥ 2048",
          (ratio >= 1).all() and (ratio[large] > 1).all())  # fmt: skip
    wide = widths >= 512
    gap = (a["best_test_loss"] / b["best_test_loss"])[wide]
    check("best test loss A / B, n ≥ 512", ", ".join(f"{v:.2g}" for v in gap), "≤ 1", (gap <= 1).all())
    growth_a = fitted_exponent(widths, a["rms_z_a_at_optimum"])
    growth_b = fitted_exponent(widths, b["rms_z_a_at_optimum"])
    check("RMS Z_A at optimum ~ n^e, Init[A]", f"{growth_a:+.2f}", "0.25 … 0.6", 0.25 <= growth_a <= 0.6)
    check("RMS Z_A at optimum ~ n^e, Init[B]", f"{growth_b:+.2f}", "-0.2 … 0.2", abs(growth_b) <= 0.2)
    reach = a["largest_lr_lowering_loss"] / b["largest_lr_lowering_loss"]
    check("largest lr still lowering the loss, A / B", ", ".join(f"{v:.2g}" for v in reach),
          "≥ 1; > 1 at the largest width", (reach >= 1).all() and reach.iloc[-1] > 1)  # fmt: skip
    return pd.DataFrame(rows)


def width_exponents(best: pd.DataFrame) -> pd.DataFrame:
    """Per init: fitted exponents in width of the optimal lr and of RMS Z_A, Z_B at the optimum."""
    rows = []
    for init, part in best.groupby("init"):
        if part["width"].nunique() < 2:
            continue
        rows.append({
            "init": init,
            "optimal_lr_exponent": fitted_exponent(part["width"], part["optimal_lr"]),
            "rms_z_a_exponent": fitted_exponent(part["width"], part["rms_z_a_at_optimum"]),
            "rms_z_b_exponent": fitted_exponent(part["width"], part["rms_z_b_at_optimum"]),
        })  # fmt: skip
    return pd.DataFrame(rows)
