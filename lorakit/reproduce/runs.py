"""A sweep stage's results as the claims' runs table (`lorakit.reproduce.claims`), and the rule that says whether a
run learned at all: its metric beat the one measured before training, where the task measures one (the LM task:
loss below its start); else, for a classifier's accuracy, it beat guessing by `CHANCE_MARGIN`."""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lorakit.core.errors import ConfigError
from lorakit.sweeps.report import numeric_metrics
from lorakit.sweeps.spec import Sweep, fixed_values
from lorakit.tasks import Task, get_task
from lorakit.tasks.glue.catalog import GLUE_TASKS

CHANCE_MARGIN = 0.05  # a classifier learned when its accuracy beats guessing by 5 points
DIAGNOSTICS = ("rms_z_a", "rms_a0_x", "rms_update_x", "rms_delta1", "rms_delta2")


@dataclass(frozen=True)
class LearnedRule:
    metric: str
    higher_is_better: bool
    above: float | None = None  # None: better than before training; else the accuracy to beat

    def __str__(self) -> str:
        if self.above is None:
            return f"{self.metric} better than before training"
        return f"{self.metric} > {self.above:.3g} (guessing + {CHANCE_MARGIN:g})"


def learned_rule(sweep: Sweep, chance: float | None = None) -> LearnedRule:
    """The rule for the sweep's runs; a task that measures its metric neither before training nor as a
    classifier's accuracy has none (a one-line error, found before anything trains)."""
    if type(get_task(sweep.task)).evaluate_before is not Task.evaluate_before:
        return LearnedRule(sweep.metric, sweep.higher_is_better)
    task = GLUE_TASKS.get(str(fixed_values(sweep)["task_name"]))
    if task is None or task.is_regression or not sweep.metric.endswith("accuracy"):
        raise ConfigError(
            f"{sweep.name}: no rule says whether a run learned: its task measures nothing before training and "
            f"{sweep.metric} is not a classifier's accuracy"
        )
    guessing = 1 / task.num_labels if chance is None else chance
    return LearnedRule(sweep.metric, sweep.higher_is_better, guessing + CHANCE_MARGIN)


def claims_runs(results: pd.DataFrame, rule: LearnedRule) -> pd.DataFrame:
    """A sweep's results.csv as the claims' runs table: every finished run (a failed one has no metric and did not
    learn, so its lr counts for no optimum); a diverged run did not learn."""
    finished = numeric_metrics(results[results["status"].isin(["done", "diverged", "failed"])]).reset_index(drop=True)
    final = finished.get(f"final_{rule.metric}", pd.Series(np.nan, index=finished.index))
    if rule.above is not None:
        better = final > rule.above
    elif f"before_{rule.metric}" not in finished:
        raise ConfigError(f"the runs record no before_{rule.metric}, so whether they learned cannot be told")
    else:
        before = finished[f"before_{rule.metric}"]
        better = (final > before) if rule.higher_is_better else (final < before)
    done = finished["status"].eq("done")
    runs = pd.DataFrame({
        "init": finished["lora_init"].astype(str),
        "lr": finished["learning_rate"].astype(float),
        "seed": finished["seed"] if "seed" in finished else 0,  # a seed the grid does not vary
        "metric": final.where(done),
        "learned": (better & done).astype(bool),
    })  # fmt: skip
    for name in DIAGNOSTICS:
        column = finished.get(f"diag_{name}")
        runs[name] = np.nan if column is None else pd.to_numeric(column, errors="coerce")
    return runs
