"""The claims logic (`lorakit.reproduce.claims`) on synthetic tables where each claim is known to pass, fail or tie."""

import numpy as np
import pandas as pd
import pytest

from lorakit.reproduce.claims import FAIL, NA, PASS, TIE, judge_claims, refined_optimum

LRS = [1e-4 * 2**k for k in range(8)]  # 1e-4 … 1.28e-2


def runs(optimum: dict, peak: dict, collapse: dict, seeds=3, noise=0.002, dynamics: dict | None = None):
    """A sweep whose metric is peak − 0.02·log2(lr / optimum)² per init plus seeded noise of std `noise` per run, at
    chance (0.5, not learned) above the init's collapse lr; `dynamics` gives each init's diagnostics columns."""
    rows, rng = [], np.random.default_rng(0)
    for init in "AB":
        for lr in LRS:
            for seed in range(seeds):
                learned = lr <= collapse[init]
                metric = peak[init] - 0.02 * np.log2(lr / optimum[init]) ** 2 + noise * rng.standard_normal()
                rows.append({"init": init, "lr": lr, "seed": seed, "metric": metric if learned else 0.5,
                             "learned": learned, **(dynamics or {}).get(init, {})})  # fmt: skip
    return pd.DataFrame(rows)


def verdicts(table: pd.DataFrame, **kwargs) -> dict:
    return dict(zip(*judge_claims(table, draws=200, **kwargs)[["claim", "verdict"]].T.to_numpy(), strict=True))


def verdict_of(found: dict, start: str) -> str:
    return next(v for claim, v in found.items() if claim.startswith(start))


PAPER = {  # at the best lr: Z_A larger under Init[A], whose update part has overtaken A_0·x; Init[B]'s δ² < δ¹
    "A": {"rms_z_a": 0.9, "rms_a0_x": 0.3, "rms_update_x": 0.8, "rms_delta1": 1e-4, "rms_delta2": 1e-4},
    "B": {"rms_z_a": 0.6, "rms_a0_x": 0.0, "rms_update_x": 0.6, "rms_delta1": 5e-4, "rms_delta2": 1e-4},
}


def test_every_claim_passes_on_a_sweep_that_behaves_as_the_paper_says():
    table = runs({"A": 1.6e-3, "B": 4e-4}, {"A": 0.86, "B": 0.84}, {"A": 6.4e-3, "B": 1.6e-3}, dynamics=PAPER)
    assert set(verdicts(table).values()) == {PASS}


def test_every_claim_fails_on_a_sweep_that_behaves_the_other_way():
    other = {"A": PAPER["B"] | {"rms_a0_x": 0.9, "rms_update_x": 0.1}, "B": PAPER["A"] | {"rms_delta2": 1e-3}}
    table = runs({"A": 4e-4, "B": 1.6e-3}, {"A": 0.84, "B": 0.86}, {"A": 1.6e-3, "B": 6.4e-3}, dynamics=other)
    assert set(verdicts(table).values()) == {FAIL}


def test_equal_inits_tie_where_a_tie_is_possible():
    table = runs({"A": 8e-4, "B": 8e-4}, {"A": 0.851, "B": 0.850}, {"A": 3.2e-3, "B": 3.2e-3}, noise=0.0)
    found = verdicts(table, tie=0.003)
    assert verdict_of(found, "largest lr") == TIE
    assert verdict_of(found, "optimal lr") == PASS  # A ≥ B holds at equality
    assert verdict_of(found, "best metric") == TIE  # 0.1 points apart, within 0.3
    assert verdict_of(found, "RMS Z_A") == NA  # no diagnostics in the table


def test_an_optimum_below_the_other_within_the_seeds_spread_is_a_tie():
    noisy = runs({"A": 6e-4, "B": 9e-4}, {"A": 0.85, "B": 0.85}, {"A": 1e-2, "B": 1e-2}, seeds=4, noise=0.03)
    assert verdict_of(verdicts(noisy), "optimal lr") == TIE
    equal = runs({"A": 8e-4, "B": 8e-4}, {"A": 0.85, "B": 0.85}, {"A": 1e-2, "B": 1e-2})  # A's fit a hair below B's
    assert verdict_of(verdicts(equal), "optimal lr") in (PASS, TIE)
    clean = runs({"A": 2e-4, "B": 3.2e-3}, {"A": 0.85, "B": 0.85}, {"A": 1e-2, "B": 1e-2}, noise=0.001)
    assert verdict_of(verdicts(clean), "optimal lr") == FAIL


def test_an_init_that_learns_nowhere_loses_the_stability_claim():
    table = runs({"A": 8e-4, "B": 8e-4}, {"A": 0.85, "B": 0.85}, {"A": 3.2e-3, "B": 1e-5})
    assert verdict_of(verdicts(table), "largest lr") == PASS


def test_a_lower_is_better_metric_turns_every_comparison():
    table = runs({"A": 1.6e-3, "B": 4e-4}, {"A": 0.86, "B": 0.84}, {"A": 6.4e-3, "B": 1.6e-3}, dynamics=PAPER)
    table["metric"] = 30 - 10 * table["metric"]  # a perplexity-like metric: lower is better, same ordering
    table.loc[~table["learned"], "metric"] = np.nan  # diverged
    found = judge_claims(table, higher_is_better=False, tie=0.05, draws=200).set_index("claim")
    assert set(found["verdict"]) == {PASS}
    assert found.loc["best metric: Init[A] ≥ Init[B]", "init_a"] == pytest.approx(30 - 8.6, abs=0.05)


@pytest.mark.parametrize("optimum", [5e-4, 7.3e-4, 1.1e-3])
def test_the_refined_optimum_is_the_vertex_of_a_parabola_in_log_lr(optimum):
    means = pd.Series([0.9 - 0.02 * np.log2(lr / optimum) ** 2 for lr in LRS], index=LRS)
    assert refined_optimum(means, higher_is_better=True) == pytest.approx(optimum, rel=1e-6)
    assert refined_optimum(means.iloc[:2], higher_is_better=True) == LRS[1]  # at an edge: the grid point
