"""The paper's claims, judged on one stage's runs: a table with a row per run and the columns

- ``init`` ("A" or "B"), ``lr``, ``seed`` (learning rates are compared at 6 significant digits);
- ``metric``: the run's final metric (NaN for a run that diverged or failed), better when higher unless told;
- ``learned``: whether the run learned at all (its loss fell below its start; its metric beat chance);
- optionally the dynamics at the run's last measured step: ``rms_z_a``, ``rms_a0_x``, ``rms_update_x``,
  ``rms_delta1``, ``rms_delta2`` (`--lora_diagnostics_steps`).

A learning rate counts for an init's optimum and best metric only if every seed there finished and learned (a lone
survivor of several diverged seeds is no optimum). Each claim is a row: its verdict (PASS, FAIL, TIE, or UNDECIDED
where the table cannot say), the value for each init, and the spread over seeds behind it. The claims:

1. stability: the largest learning rate at which at least half the seeds learn is larger under Init[A] (TIE: the
   same grid point);
2. optimal lr: Init[A]'s is at least Init[B]'s, each the vertex of a parabola in log lr through the best counted lr
   and its neighbours; TIE when the gap is within half a grid step or, with ≥ 3 seeds, the 95% bootstrap interval of
   the gap (seeds drawn with replacement) covers 0;
3. best metric: Init[A]'s, at its best counted lr, beats Init[B]'s (TIE: within `tie`, in the metric's units);
4. mechanism, at each init's best counted lr: RMS Z_A larger under Init[A] (TIE: within 5%); under Init[B] δ² (B's
   own update) small next to δ¹ (A's update seen through B): δ²/δ¹ ≤ 1/2 PASS, ≥ 1 FAIL, TIE between; and whether
   Init[A]'s update part (A_t − A_0)·x has overtaken A_0·x, i.e. whether the model is in the paper's regime at all
   (ratio > 1.05 PASS, < 0.95 FAIL, TIE between).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lorakit.core.errors import ConfigError
from lorakit.toy.analysis import refined_minimum

PASS, FAIL, TIE, NA = "PASS", "FAIL", "TIE", "UNDECIDED"  # not "n/a": pandas reads that as NaN
REQUIRED = ("init", "lr", "seed", "metric", "learned")
RELATIVE_TIE = 0.05  # two RMS values within 5% of each other are a tie
MIN_SEEDS_FOR_INTERVAL = 3


@dataclass(frozen=True)
class Claim:
    """One row of the claims table: the claim, its verdict, each init's value (NaN where the claim has one value
    only) and the spread over seeds behind them."""

    claim: str
    verdict: str
    init_a: float
    init_b: float
    spread: str = ""


def checked(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with its learning rates rounded to 6 significant digits and `learned` false where missing; a table
    without both inits, a required column, or with a run twice is a one-line error."""
    missing = [c for c in REQUIRED if c not in runs]
    if missing:
        raise ConfigError(f"claims: the runs table lacks {', '.join(missing)}")
    if set(runs["init"]) != {"A", "B"}:
        raise ConfigError(f"claims: need runs of both Init[A] and Init[B], got {sorted(set(runs['init']))}")
    runs = runs.assign(lr=runs["lr"].map(lambda v: float(f"{v:.6g}")), learned=runs["learned"].fillna(False))
    if runs.duplicated(["init", "lr", "seed"]).any():
        raise ConfigError("claims: a run (init, lr, seed) appears twice")
    return runs


def direction(higher_is_better: bool) -> float:
    return 1.0 if higher_is_better else -1.0


def grid_means(runs: pd.DataFrame) -> pd.Series:
    """The mean metric over seeds at each learning rate where every seed finished and learned, sorted by lr."""
    counted = runs.groupby("lr").filter(
        lambda part: part["metric"].notna().all() and part["learned"].astype(bool).all()
    )
    return counted.groupby("lr")["metric"].mean().sort_index()


def best_grid_lr(runs: pd.DataFrame, higher_is_better: bool) -> float:
    """The counted learning rate with the best mean metric (NaN if none counts)."""
    means = grid_means(runs)
    return float((means * direction(higher_is_better)).idxmax()) if len(means) else float("nan")


def refined_optimum(means: pd.Series, higher_is_better: bool) -> float:
    """The best lr of `means`, moved to the vertex of the parabola (in log lr) through it and its two neighbours when
    it is an interior point and the parabola opens the right way; at an edge, the edge (a bound, not a vertex). The
    toy's `refined_minimum` does the fit, on the score turned into a loss."""
    score = means.dropna() * direction(higher_is_better)
    if score.empty:
        return float("nan")
    lrs = score.index.to_numpy(dtype=float)
    vertex = refined_minimum(np.log(lrs), -score.to_numpy())
    on_grid = np.flatnonzero(np.log(lrs) == vertex)  # a grid point stays that lr exactly, not exp(log(lr))
    return float(lrs[on_grid[0]] if len(on_grid) else np.exp(vertex))


def half_step(runs: pd.DataFrame, lr: float) -> float:
    """Half the grid's step (in log lr) at the grid point nearest `lr`, the smaller of its two: what a fit on the
    grid resolves there."""
    grid = np.log(np.sort(runs["lr"].unique()))
    if len(grid) < 2:
        return 0.0
    k = int(np.argmin(np.abs(grid - np.log(lr))))
    steps = np.diff(grid)[max(k - 1, 0) : k + 1]
    return 0.5 * float(steps.min())


def largest_lr_that_learns(runs: pd.DataFrame) -> tuple[float, float]:
    """The largest lr at which at least half the seeds learned, and that share (NaN, 0 if none did)."""
    share = runs.groupby("lr")["learned"].mean().sort_index()
    learning = share[share >= 0.5]
    return (float(learning.index.max()), float(learning.iloc[-1])) if len(learning) else (float("nan"), 0.0)


def three_way(value: float, low: float, high: float, higher_passes: bool = True) -> str:
    """PASS above `high`, FAIL below `low` (the other way round unless `higher_passes`), TIE between, UNDECIDED if
    NaN."""
    if not np.isfinite(value):
        return NA
    if low <= value <= high:
        return TIE
    return PASS if (value > high) == higher_passes else FAIL


def stability(runs: pd.DataFrame) -> Claim:
    """Claim 1 of the module docstring."""
    (a, share_a), (b, share_b) = (largest_lr_that_learns(runs[runs["init"] == i]) for i in "AB")
    spread = f"share of seeds learning there: A {share_a:.0%}, B {share_b:.0%}"
    if np.isnan(a) or np.isnan(b):  # an init that learns at no lr of the grid loses to one that does
        verdict = NA if np.isnan(a) and np.isnan(b) else (FAIL if np.isnan(a) else PASS)
    else:
        verdict = three_way(np.log(a / b), -1e-9, 1e-9)
        if verdict == TIE and a == runs["lr"].max():
            spread += "; both learn at the grid's largest lr: their limits lie beyond it"
    return Claim("largest lr that still learns: Init[A] > Init[B]", verdict, a, b, spread)


def optimal_lr(runs: pd.DataFrame, higher_is_better: bool, draws: int, rng: np.random.Generator) -> Claim:
    """Claim 2 of the module docstring."""
    mine = {init: runs[runs["init"] == init] for init in "AB"}
    found = {init: refined_optimum(grid_means(part), higher_is_better) for init, part in mine.items()}
    gap = np.log(found["A"] / found["B"])
    if not np.isfinite(gap):
        return Claim("optimal lr: Init[A] ≥ Init[B]", NA, found["A"], found["B"], "no lr counts for an init")
    band = half_step(runs, found["B"])
    seeds = min(part["seed"].nunique() for part in mine.values())
    verdict = three_way(gap, -band, band)
    spread = f"gap log(A/B) = {gap:+.2f}; within ±{band:.2f} (half a grid step) a tie"
    if seeds >= MIN_SEEDS_FOR_INTERVAL:
        gaps = [np.log(resampled_optimum(mine["A"], higher_is_better, rng) / resampled_optimum(mine["B"],
                higher_is_better, rng)) for _ in range(draws)]  # fmt: skip
        gaps = np.asarray(gaps)[np.isfinite(gaps)]
        if len(gaps):
            low, high = np.percentile(gaps, [2.5, 97.5])
            verdict = TIE if low <= 0 <= high else verdict
            spread += f"; 95% bootstrap interval over seeds {low:+.2f} … {high:+.2f}"
    else:
        spread += f"; {seeds} seeds: no bootstrap interval"
    return Claim("optimal lr: Init[A] ≥ Init[B]", verdict, found["A"], found["B"], spread)


def resampled_optimum(runs: pd.DataFrame, higher_is_better: bool, rng: np.random.Generator) -> float:
    """The refined optimum of the runs of seeds drawn with replacement (each drawn seed keeps all its lrs)."""
    seeds = runs["seed"].unique()
    drawn = pd.concat([runs[runs["seed"] == s].assign(seed=k) for k, s in enumerate(rng.choice(seeds, len(seeds)))])
    return refined_optimum(grid_means(drawn), higher_is_better)


def best_metric(runs: pd.DataFrame, higher_is_better: bool, tie: float) -> Claim:
    """Claim 3 of the module docstring."""
    values, spreads = {}, {}
    for init in "AB":
        mine = runs[runs["init"] == init]
        at = mine[mine["lr"] == best_grid_lr(mine, higher_is_better)]["metric"]
        values[init] = float(at.mean()) if len(at) else float("nan")
        spreads[init] = f"{at.std(ddof=1):.3g} ({len(at)} seeds)" if len(at) > 1 else f"— ({len(at)} seed)"
    gap = direction(higher_is_better) * (values["A"] - values["B"])
    spread = f"std over seeds: A {spreads['A']}, B {spreads['B']}; within {tie:g} a tie"
    return Claim("best metric: Init[A] ≥ Init[B]", three_way(gap, -tie, tie), values["A"], values["B"], spread)


def at_best_lr(runs: pd.DataFrame, init: str, column: str, higher_is_better: bool) -> pd.Series:
    """The values of `column` over seeds at the init's best counted lr (empty without that column)."""
    mine = runs[runs["init"] == init]
    if column not in mine:
        return pd.Series(dtype=float)
    return mine[mine["lr"] == best_grid_lr(mine, higher_is_better)][column].astype(float)


def ratio(top: pd.Series, bottom: pd.Series) -> float:
    """mean(top) / mean(bottom); NaN where either is missing or the bottom is 0."""
    low = bottom.mean() if len(bottom) else np.nan
    return float(top.mean() / low) if len(top) and np.isfinite(low) and low > 0 else float("nan")


def std_text(values: pd.Series) -> str:
    return f"{values.std(ddof=1):.3g}" if len(values) > 1 else "—"


def mechanism(runs: pd.DataFrame, higher_is_better: bool) -> list[Claim]:
    """Claim 4 of the module docstring: three rows."""

    def values(init: str, column: str) -> pd.Series:
        return at_best_lr(runs, init, column, higher_is_better)

    z_a = {init: values(init, "rms_z_a") for init in "AB"}
    a, b = (float(z.mean()) if len(z) else float("nan") for z in z_a.values())
    z_claim = Claim("RMS Z_A at each init's best lr: Init[A] > Init[B]",
                    three_way(ratio(z_a["A"], z_a["B"]), 1 - RELATIVE_TIE, 1 + RELATIVE_TIE), a, b,
                    f"std over seeds: A {std_text(z_a['A'])}, B {std_text(z_a['B'])}")  # fmt: skip
    d1, d2 = values("B", "rms_delta1"), values("B", "rms_delta2")
    under = ratio(d2, d1)
    b_claim = Claim("Init[B] at its best lr: δ² (B's own update) small next to δ¹ (A's through B); value δ²/δ¹",
                    three_way(under, 0.5, 1.0, higher_passes=False), float("nan"), under,
                    f"std over seeds: δ¹ {std_text(d1)}, δ² {std_text(d2)}")  # fmt: skip
    update, a0 = values("A", "rms_update_x"), values("A", "rms_a0_x")
    overtaken = ratio(update, a0)
    a_claim = Claim("Init[A] at its best lr: (A_t − A_0)·x has overtaken A_0·x (the paper's regime): the value is "
                    "their ratio", three_way(overtaken, 1 - RELATIVE_TIE, 1 + RELATIVE_TIE), overtaken, float("nan"),
                    f"std over seeds: update {std_text(update)}, A_0·x {std_text(a0)}")  # fmt: skip
    return [z_claim, b_claim, a_claim]


def judge_claims(runs: pd.DataFrame, *, tie: float, higher_is_better: bool = True, draws: int = 1000,
                 seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Every claim of the module docstring on one stage's `runs`, a row each. `tie` is in the metric's own units
    (0.003 is 0.3 points of an accuracy given as a fraction; 0.3 would be 0.3 of a perplexity)."""
    runs = checked(runs)
    rng = np.random.default_rng(seed)
    rows = [stability(runs), optimal_lr(runs, higher_is_better, draws, rng), best_metric(runs, higher_is_better, tie)]
    return pd.DataFrame([vars(claim) for claim in [*rows, *mechanism(runs, higher_is_better)]])
