"""The paper's claims, judged on one stage's runs: a table with a row per run and the columns

- ``init`` ("A" or "B"), ``lr``, ``seed``;
- ``metric``: the run's final metric (NaN for a run that diverged or failed), better when higher unless told;
- ``learned``: whether the run learned at all (its loss fell below its start; its metric beat chance);
- optionally the dynamics at the run's last measured step: ``rms_z_a``, ``rms_a0_x``, ``rms_update_x``,
  ``rms_delta1``, ``rms_delta2`` (`--lora_diagnostics_steps`).

Each claim is a row: its verdict (PASS, FAIL, TIE, or n/a where the table cannot say), the value for each init, and
the spread over seeds behind it. The claims:

1. stability: the largest learning rate at which at least half the seeds learn is larger under Init[A] (TIE: equal);
2. optimal lr: Init[A]'s is at least Init[B]'s (a parabola in log lr through the best grid point and its neighbours,
   with a bootstrap interval over seeds; TIE: A below B, but within half a grid step or the intervals overlap);
3. best metric: Init[A]'s, at its best grid lr, is at least Init[B]'s (TIE: within `tie`);
4. mechanism, at each init's best grid lr: RMS Z_A larger under Init[A]; under Init[B] δ² (B's own update) smaller
   than δ¹ (A's update seen through B), B under-trained; and whether Init[A]'s update part (A_t − A_0)·x has
   overtaken A_0·x, i.e. whether the model is in the paper's regime at all.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

PASS, FAIL, TIE, NA = "PASS", "FAIL", "TIE", "n/a"
DYNAMICS = ("rms_z_a", "rms_a0_x", "rms_update_x", "rms_delta1", "rms_delta2")


@dataclass(frozen=True)
class Claim:
    claim: str
    verdict: str
    init_a: float
    init_b: float
    spread: str = ""


def direction(higher_is_better: bool) -> float:
    return 1.0 if higher_is_better else -1.0


def grid_means(runs: pd.DataFrame) -> pd.Series:
    """The mean metric over seeds at each learning rate (NaN where every seed diverged), sorted by lr."""
    return runs.groupby("lr")["metric"].mean().sort_index()


def best_grid_lr(runs: pd.DataFrame, higher_is_better: bool) -> float:
    means = grid_means(runs).dropna()
    if means.empty:
        return float("nan")
    return float((means * direction(higher_is_better)).idxmax())


def refined_optimum(means: pd.Series, higher_is_better: bool) -> float:
    """The best grid lr, moved to the vertex of the parabola (in log lr) through it and its two neighbours when it is
    an interior point and the parabola opens the right way; kept within the neighbours."""
    means = means.dropna() * direction(higher_is_better)
    if means.empty:
        return float("nan")
    at = int(np.argmax(means.to_numpy()))
    lrs = means.index.to_numpy(dtype=float)
    if at == 0 or at == len(means) - 1:
        return float(lrs[at])
    x, y = np.log(lrs[at - 1 : at + 2]), means.to_numpy()[at - 1 : at + 2]
    curve, slope, _ = np.polyfit(x, y, 2)
    if curve >= 0:
        return float(lrs[at])
    return float(np.exp(np.clip(-slope / (2 * curve), x[0], x[-1])))


def bootstrap_optimum(runs: pd.DataFrame, higher_is_better: bool, draws: int, rng) -> tuple[float, float]:
    """A 95% interval of the refined optimum over seeds drawn with replacement (a seed keeps all its lrs)."""
    seeds = runs["seed"].unique()
    by_seed = {seed: part for seed, part in runs.groupby("seed")}
    found = []
    for _ in range(draws):
        drawn = pd.concat([by_seed[s] for s in rng.choice(seeds, size=len(seeds), replace=True)])
        found.append(refined_optimum(grid_means(drawn), higher_is_better))
    logs = np.log(np.asarray(found, dtype=float))
    logs = logs[np.isfinite(logs)]
    if not len(logs):
        return float("nan"), float("nan")
    return float(np.exp(np.percentile(logs, 2.5))), float(np.exp(np.percentile(logs, 97.5)))


def largest_learning_lr(runs: pd.DataFrame) -> tuple[float, float]:
    """The largest lr at which at least half the seeds learned, and that share (NaN, 0 if none did)."""
    share = runs.groupby("lr")["learned"].mean().sort_index()
    learning = share[share >= 0.5]
    return (float(learning.index.max()), float(learning.iloc[-1])) if len(learning) else (float("nan"), 0.0)


def compare(a: float, b: float, tie: float = 0.0) -> str:
    """PASS when a > b (beyond `tie`), TIE within it, FAIL below; n/a when either is missing."""
    if not (np.isfinite(a) and np.isfinite(b)):
        return NA
    if abs(a - b) <= tie:
        return TIE
    return PASS if a > b else FAIL


def stability(runs: pd.DataFrame) -> Claim:
    (a, share_a), (b, share_b) = (largest_learning_lr(runs[runs["init"] == i]) for i in "AB")
    spread = f"seeds learning there: A {share_a:.0%}, B {share_b:.0%}"
    if np.isnan(a) or np.isnan(b):  # an init that learns at no lr of the grid loses to one that does
        verdict = NA if np.isnan(a) and np.isnan(b) else (FAIL if np.isnan(a) else PASS)
    else:
        verdict = compare(np.log(a), np.log(b))
    return Claim("largest lr that still learns: Init[A] > Init[B]", verdict, a, b, spread)


def optimal_lr(runs: pd.DataFrame, higher_is_better: bool, draws: int, seed: int) -> Claim:
    rng = np.random.default_rng(seed)
    found, intervals = {}, {}
    for init in "AB":
        mine = runs[runs["init"] == init]
        found[init] = refined_optimum(grid_means(mine), higher_is_better)
        intervals[init] = bootstrap_optimum(mine, higher_is_better, draws, rng)
    (low_a, high_a), (low_b, high_b) = intervals["A"], intervals["B"]
    gap = np.log(found["A"]) - np.log(found["B"])
    half_step = 0.5 * np.median(np.diff(np.log(np.sort(runs["lr"].unique()))))  # what a fit on the grid resolves
    if not np.isfinite(gap):
        verdict = NA
    elif gap >= -1e-9:
        verdict = PASS  # the claim is A ≥ B
    else:  # A below B: a tie within half a grid step or within the seeds' spread
        verdict = TIE if gap >= -half_step or high_a >= low_b else FAIL
    spread = f"95% bootstrap over seeds: A {low_a:.3g} … {high_a:.3g}, B {low_b:.3g} … {high_b:.3g}"
    return Claim("optimal lr: Init[A] ≥ Init[B]", verdict, found["A"], found["B"], spread)


def best_metric(runs: pd.DataFrame, higher_is_better: bool, tie: float) -> Claim:
    values, spreads = {}, {}
    for init in "AB":
        mine = runs[runs["init"] == init]
        lr = best_grid_lr(mine, higher_is_better)
        at = mine[mine["lr"] == lr]["metric"]
        values[init], spreads[init] = float(at.mean()) if len(at) else float("nan"), float(at.std(ddof=1))
    sign = direction(higher_is_better)
    verdict = compare(sign * values["A"], sign * values["B"], tie)
    spread = f"std over seeds: A {spreads['A']:.3g}, B {spreads['B']:.3g}; a tie within {tie:g}"
    return Claim("best metric: Init[A] ≥ Init[B]", verdict, values["A"], values["B"], spread)


def at_best_lr(runs: pd.DataFrame, init: str, column: str, higher_is_better: bool) -> float:
    """The mean over seeds of `column` at the init's best grid lr (NaN without that column)."""
    mine = runs[runs["init"] == init]
    if column not in mine:
        return np.float64("nan")
    return np.float64(mine[mine["lr"] == best_grid_lr(mine, higher_is_better)][column].mean())  # x / 0: inf, no error


def mechanism(runs: pd.DataFrame, higher_is_better: bool) -> list[Claim]:
    def value(init: str, column: str) -> np.float64:
        return at_best_lr(runs, init, column, higher_is_better)

    a, b = value("A", "rms_z_a"), value("B", "rms_z_a")
    z_a = Claim("RMS Z_A at each init's best lr: Init[A] > Init[B]", compare(a, b), a, b)
    d1, d2 = value("B", "rms_delta1"), value("B", "rms_delta2")
    under = Claim("Init[B] at its best lr: δ² (B's own update) < δ¹ (A's, through B)", compare(d1, d2),
                  float("nan"), d2 / d1, "Init[B]'s value: δ² / δ¹")  # fmt: skip
    ratio = value("A", "rms_update_x") / value("A", "rms_a0_x")
    regime = Claim("Init[A] at its best lr: (A_t − A_0)·x has overtaken A_0·x (the paper's regime)",
                   compare(ratio, 1.0), ratio, float("nan"), "Init[A]'s value: (A_t − A_0)·x / A_0·x")  # fmt: skip
    return [z_a, under, regime]


def judge_claims(runs: pd.DataFrame, higher_is_better: bool = True, tie: float = 0.003, draws: int = 1000,
                 seed: int = 0) -> pd.DataFrame:  # fmt: skip
    """Every claim of the module docstring on one stage's `runs`, a row each (`tie` in the metric's own units: 0.003
    is 0.3 points of accuracy)."""
    rows = [stability(runs), optimal_lr(runs, higher_is_better, draws, seed), best_metric(runs, higher_is_better, tie)]
    return pd.DataFrame([vars(claim) for claim in [*rows, *mechanism(runs, higher_is_better)]])
