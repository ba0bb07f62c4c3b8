"""The claims logic (`lorakit.reproduce.claims`) on synthetic tables where each claim is known to pass, fail or tie."""

import numpy as np
import pandas as pd
import pytest

from lorakit.core.errors import ConfigError
from lorakit.reproduce.claims import FAIL, NA, PASS, TIE, judge_claims, refined_optimum

LRS = [1e-4 * 2**k for k in range(8)]  # 1e-4 … 1.28e-2
PAPER = {  # at each init's best lr: Z_A larger under Init[A], whose update part has overtaken A_0·x; δ²/δ¹ = 0.2
    "A": {"rms_z_a": 0.9, "rms_a0_x": 0.3, "rms_update_x": 0.8, "rms_delta1": 1e-4, "rms_delta2": 1e-4},
    "B": {"rms_z_a": 0.6, "rms_a0_x": 0.0, "rms_update_x": 0.6, "rms_delta1": 5e-4, "rms_delta2": 1e-4},
}
AWAY = {"rms_z_a": 50.0, "rms_a0_x": 1.0, "rms_update_x": 0.01, "rms_delta1": 1.0, "rms_delta2": 9.0}  # other lrs


def runs(optimum, peak, collapse, seeds=3, noise=0.002, dynamics=None, lrs=LRS) -> pd.DataFrame:
    """A sweep whose metric is peak − 0.02·log2(lr / optimum)² per init plus seeded noise of std `noise` per run, at
    chance (0.5, not learned) above the init's collapse lr. `dynamics` gives each init's diagnostics at the grid lr
    nearest its optimum; every other lr gets AWAY, so a claim read at the wrong lr turns."""
    rows, rng = [], np.random.default_rng(0)
    for init in "AB":
        nearest = min(lrs, key=lambda lr: abs(np.log(lr / optimum[init])))
        for lr in lrs:
            for seed in range(seeds):
                learned = lr <= collapse[init]
                metric = peak[init] - 0.02 * np.log2(lr / optimum[init]) ** 2 + noise * rng.standard_normal()
                measured = (dynamics[init] if lr == nearest else AWAY) if dynamics else {}
                rows.append({"init": init, "lr": lr, "seed": seed, "metric": metric if learned else 0.5,
                             "learned": learned, **measured})  # fmt: skip
    return pd.DataFrame(rows)


def verdicts(table: pd.DataFrame, tie: float = 0.003, **kwargs) -> dict:
    judged = judge_claims(table, tie=tie, draws=200, **kwargs)
    return {claim.split(":")[0]: verdict for claim, verdict in zip(judged["claim"], judged["verdict"], strict=True)}


GOOD = ({"A": 1.6e-3, "B": 4e-4}, {"A": 0.86, "B": 0.84}, {"A": 6.4e-3, "B": 1.6e-3})


def test_every_claim_passes_on_a_sweep_that_behaves_as_the_paper_says():
    found = verdicts(runs(*GOOD, dynamics=PAPER))
    assert len(found) == 6 and set(found.values()) == {PASS}, found


def test_every_claim_fails_on_a_sweep_that_behaves_the_other_way():
    other = {"A": PAPER["B"] | {"rms_a0_x": 0.9, "rms_update_x": 0.1}, "B": PAPER["A"] | {"rms_delta2": 2e-4}}
    table = runs({"A": 4e-4, "B": 1.6e-3}, {"A": 0.84, "B": 0.86}, {"A": 1.6e-3, "B": 6.4e-3}, dynamics=other)
    found = verdicts(table)
    assert set(found.values()) == {FAIL}, found


def test_equal_inits_tie_on_every_claim():
    same = {"rms_z_a": 0.9, "rms_a0_x": 0.5, "rms_update_x": 0.51, "rms_delta1": 1e-4, "rms_delta2": 0.7e-4}
    table = runs({"A": 8e-4, "B": 8e-4}, {"A": 0.851, "B": 0.850}, {"A": 3.2e-3, "B": 3.2e-3}, dynamics={
        "A": same, "B": same | {"rms_z_a": 0.88}})  # fmt: skip
    found = verdicts(table)
    assert set(found.values()) == {TIE}, found  # optimum within half a step, 0.1 points, Z_A 2%, δ²/δ¹ 0.7, ratio 1.02


def test_an_optimum_below_the_other_within_the_seeds_spread_is_a_tie_and_far_below_a_fail():
    noisy = runs({"A": 6e-4, "B": 9e-4}, {"A": 0.85, "B": 0.85}, {"A": 1e-2, "B": 1e-2}, seeds=4, noise=0.05)
    judged = judge_claims(noisy, tie=0.003, draws=200).set_index("claim")
    row = judged.loc["optimal lr: Init[A] ≥ Init[B]"]
    assert row["verdict"] == TIE and "bootstrap interval" in row["spread"]
    assert np.log(row["init_a"] / row["init_b"]) < -np.log(2) / 2  # outside half a step: the interval makes the tie
    clean = runs({"A": 2e-4, "B": 3.2e-3}, {"A": 0.85, "B": 0.85}, {"A": 1e-2, "B": 1e-2}, noise=0.001)
    assert verdicts(clean)["optimal lr"] == FAIL


def test_the_optimum_and_best_metric_count_only_lrs_where_every_seed_learned():
    table = runs(*GOOD)
    wild = (table["init"] == "A") & (table["lr"] == LRS[6])  # 6.4e-3: 2 of 3 seeds diverged, one lucky survivor
    table.loc[wild, "metric"] = [np.nan, np.nan, 0.99]
    judged = judge_claims(table, tie=0.003, draws=200).set_index("claim")
    assert judged.loc["best metric: Init[A] ≥ Init[B]", "init_a"] == pytest.approx(0.86, abs=0.01)
    assert judged.loc["optimal lr: Init[A] ≥ Init[B]", "init_a"] == pytest.approx(1.6e-3, rel=0.2)


def test_stability_needs_half_the_seeds_and_an_init_that_learns_nowhere_loses():
    table = runs({"A": 8e-4, "B": 8e-4}, {"A": 0.85, "B": 0.85}, {"A": 1.6e-3, "B": 1.6e-3})
    top = (table["lr"] == LRS[5]) & (table["seed"] < 2)  # 3.2e-3: A has 2 of 3 seeds learning, B 1 of 3
    table.loc[top & (table["init"] == "A"), "learned"] = True
    table.loc[top & (table["init"] == "B") & (table["seed"] == 0), "learned"] = True
    judged = (
        judge_claims(table, tie=0.003, draws=50)
        .set_index("claim")
        .loc["largest lr that still learns: Init[A] > Init[B]"]
    )
    assert judged["verdict"] == PASS and judged["init_a"] == LRS[5] and judged["init_b"] == LRS[4]
    nowhere = runs({"A": 8e-4, "B": 8e-4}, {"A": 0.85, "B": 0.85}, {"A": 1e-5, "B": 3.2e-3})
    assert verdicts(nowhere)["largest lr that still learns"] == FAIL
    neither = runs({"A": 8e-4, "B": 8e-4}, {"A": 0.85, "B": 0.85}, {"A": 1e-5, "B": 1e-5})
    assert set(verdicts(neither).values()) == {NA}


def test_a_lower_is_better_metric_turns_every_comparison():
    for good, expected in ((True, PASS), (False, FAIL)):
        optimum, peak, collapse = GOOD if good else ({"A": 4e-4, "B": 1.6e-3}, {"A": 0.84, "B": 0.86}, GOOD[2])
        table = runs(optimum, peak, collapse)
        table["metric"] = 30 - 10 * table["metric"]  # a perplexity-like metric: lower is better, same ordering
        found = verdicts(table, tie=0.05, higher_is_better=False)
        assert found["best metric"] == expected and found["optimal lr"] == expected


def test_lrs_a_bit_apart_are_one_grid_point_and_one_seed_gives_no_interval():
    table = runs(*GOOD, seeds=1)
    table.loc[table.index % 2 == 0, "lr"] *= 1 + 1e-12
    judged = judge_claims(table, tie=0.003, draws=50).set_index("claim").loc["optimal lr: Init[A] ≥ Init[B]"]
    assert judged["verdict"] == PASS and "1 seeds: no bootstrap interval" in judged["spread"]
    assert "±0.35" in judged["spread"]  # half a doubling: ln 2 / 2


def test_a_table_that_cannot_be_judged_is_a_one_line_error():
    table = runs(*GOOD)
    with pytest.raises(ConfigError, match="both Init"):
        judge_claims(table[table["init"] == "A"], tie=0.003)
    with pytest.raises(ConfigError, match="learned"):
        judge_claims(table.drop(columns="learned"), tie=0.003)
    with pytest.raises(ConfigError, match="twice"):
        judge_claims(pd.concat([table, table.iloc[:1]]), tie=0.003)


@pytest.mark.parametrize("optimum", [5e-4, 7.3e-4, 1.1e-3])
@pytest.mark.parametrize("grid", [LRS, [1e-4, 3e-4, 4e-4, 1e-3, 2.5e-3, 8e-3]])
def test_the_refined_optimum_is_the_vertex_of_a_parabola_in_log_lr(optimum, grid):
    means = pd.Series([0.9 - 0.02 * np.log2(lr / optimum) ** 2 for lr in grid], index=grid)
    assert refined_optimum(means, higher_is_better=True) == pytest.approx(optimum, rel=1e-6)
    assert refined_optimum(-means, higher_is_better=False) == pytest.approx(optimum, rel=1e-6)
    assert refined_optimum(means.iloc[:2], higher_is_better=True) == grid[1]  # at an edge: the grid point
