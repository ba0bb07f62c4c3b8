"""The width check's analysis: the exponent of each measured quantity against width n (and against rank r) at every
step, the theory's predictions, the judged table with pass/fail, and the step at which Init[A]'s update part
(A_t − A_0)·x overtakes A_0·x.

An exponent is the slope of log RMS against log n over the widths, fitted to the mean over layers (then over seeds)
at each step; per-layer exponents fit each layer's mean over seeds. A quantity that is 0 at some width (δ¹ at step 1
under Init[A], where B = 0; A_0·x under Init[B]) has no exponent (NaN).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

QUANTITIES = {  # column → its name in tables
    "rms_z_a": "Z_A",
    "rms_a0_x": "A_0·x",
    "rms_update_x": "(A_t−A_0)·x",
    "rms_z_b": "Z_B",
    "rms_delta1": "δ¹",
    "rms_delta2": "δ²",
    "rms_delta3": "δ³",
}
SETTING = ["arch", "scheme", "lr_scaling"]
LAYER_MEAN = "mean of layers"


@dataclass(frozen=True)
class Prediction:
    """The theory's exponent of `quantity` against n under `scheme` at η ∝ `lr_scaling`, at the steps `at` names:
    "last", "step 2" or "every step from 2" (under Init[A], B = 0 until step 1's update, so A first moves at step 2).
    Unjudged ones are limits that a finite width need not show."""

    scheme: str
    lr_scaling: str
    quantity: str
    exponent: float
    at: str
    judged: bool = True

    def steps(self, last: int) -> list[int]:
        return {"last": [last], "step 2": [2], "every step from 2": list(range(2, last + 1))}[self.at]


def predictions_at(scheme: str, lr_scaling: str, at: str, exponents: dict, judged: bool = True) -> list[Prediction]:
    return [Prediction(scheme, lr_scaling, q, e, at, judged) for q, e in exponents.items()]


PREDICTIONS = [
    *predictions_at("A", "n^-1", "last", {"rms_z_a": 0, "rms_z_b": -1, "rms_delta1": -1, "rms_delta2": -1}),
    *predictions_at("B", "n^-1", "last", {"rms_z_a": 0, "rms_z_b": 0, "rms_delta1": 0, "rms_delta2": -1}),
    *predictions_at("B", "n^-1/2", "step 2", {"rms_z_a": 0.5, "rms_z_b": 0.5, "rms_delta1": 0.5, "rms_delta2": 0}),
    Prediction("A", "n^-1/2", "rms_update_x", 0.5, "every step from 2"),
    Prediction("A", "n^-1/2", "rms_delta1", 0, "every step from 2"),
    *predictions_at("A", "n^-1/2", "last", {"rms_z_a": 0.5, "rms_z_b": 0, "rms_delta2": 0}, judged=False),
]


def means(results: pd.DataFrame, x: str, by_layer: bool = False) -> pd.DataFrame:
    """The mean of each quantity per setting, step and `x` (width or rank): over layers, then over seeds (or, with
    `by_layer`, per layer over seeds)."""
    keys = [*SETTING, "step", x] + (["layer"] if by_layer else [])
    per_seed = results.groupby([*keys, "seed"])[list(QUANTITIES)].agg(mean_with_nan)
    return per_seed.groupby(keys).agg(mean_with_nan).reset_index()


def mean_with_nan(values: pd.Series) -> float:
    """The mean, NaN if any value is (a layer or seed that blew up must not drop out of a fit unseen)."""
    return values.mean(skipna=False)


def slope(x: pd.Series, y: pd.Series) -> float:
    """The least-squares slope of log y against log x; NaN unless every y is positive and finite."""
    y = np.asarray(y, dtype=float)
    if len(y) < 2 or not np.all(np.isfinite(y) & (y > 0)):
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(x, dtype=float)), np.log(y), 1)[0])


def exponents(table: pd.DataFrame, x: str) -> pd.DataFrame:
    """One row per setting × step (× layer, when `table` has layers): the fitted exponent of each quantity in `x`."""
    keys = [k for k in [*SETTING, "step", "layer"] if k in table]
    rows = []
    for key, part in table.groupby(keys):
        part = part.sort_values(x)
        rows.append({**dict(zip(keys, key, strict=True)), **{q: slope(part[x], part[q]) for q in QUANTITIES}})
    return pd.DataFrame(rows)


def width_exponents(results: pd.DataFrame) -> pd.DataFrame:
    """Exponents against width at every step, of the layer mean (layer = LAYER_MEAN) and of each layer."""
    overall = exponents(means(results, "width"), "width").assign(layer=LAYER_MEAN)
    return pd.concat([overall, exponents(means(results, "width", by_layer=True), "width")], ignore_index=True)


def judge(exps: pd.DataFrame, tolerance: float, predictions: list[Prediction] = PREDICTIONS) -> pd.DataFrame:
    """One row per architecture × prediction: the measured exponent (the one farthest from the prediction over the
    steps it is judged at), the range over those steps and, where judged, whether it is within ±`tolerance`."""
    overall = exps[exps["layer"] == LAYER_MEAN]
    rows = []
    for arch, part in overall.groupby("arch"):
        last = int(part["step"].max())
        for p in predictions:
            mine = part[(part["scheme"] == p.scheme) & (part["lr_scaling"] == p.lr_scaling)]
            values = mine[mine["step"].isin(p.steps(last))][p.quantity].to_numpy(dtype=float)
            worst = values[np.argmax(np.abs(values - p.exponent))] if len(values) else float("nan")
            if np.isnan(values).any():
                worst = float("nan")
            within = bool(np.isfinite(worst) and abs(worst - p.exponent) <= tolerance)
            rows.append({
                "arch": arch, "scheme": f"Init[{p.scheme}]", "lr": f"∝ {p.lr_scaling}", "at": p.at,
                "quantity": QUANTITIES[p.quantity], "predicted": p.exponent, "measured": worst,
                "range": spread(values),
                "result": ("pass" if within else "FAIL") if p.judged else "reported (a limit)",
            })  # fmt: skip
    return pd.DataFrame(rows)


def spread(values: np.ndarray) -> str:
    """ "min … max" of several exponents (NaN among them: said), else nothing."""
    if len(values) < 2:
        return ""
    if np.isnan(values).any():
        return "NaN at some step"
    return f"{values.min():+.2f} … {values.max():+.2f}"


def crossover(results: pd.DataFrame) -> pd.DataFrame:
    """Under Init[A], per architecture, η scaling and width: the first step at which the update part (A_t − A_0)·x
    is larger than A_0·x (layer and seed means), or none; and their ratio at the last step."""
    table = means(results[results["scheme"] == "A"], "width")
    rows = []
    for (arch, lr_scaling, width), part in table.groupby(["arch", "lr_scaling", "width"]):
        part = part.sort_values("step")
        over = part[part["rms_update_x"] > part["rms_a0_x"]]["step"]
        last = part.iloc[-1]
        rows.append({"arch": arch, "lr": f"∝ {lr_scaling}", "width": width,
                     "overtakes at step": int(over.iloc[0]) if len(over) else None,
                     "update / A_0·x at the last step": last["rms_update_x"] / last["rms_a0_x"]})  # fmt: skip
    return pd.DataFrame(rows).astype({"overtakes at step": "Int64"})


def rank_exponents(results: pd.DataFrame) -> pd.DataFrame:
    """Exponents against rank at the last step, per architecture, scheme and η scaling (no prediction is judged)."""
    table = means(results, "rank")
    table = table[table["step"] == table["step"].max()]
    return exponents(table, "rank").drop(columns="step")
