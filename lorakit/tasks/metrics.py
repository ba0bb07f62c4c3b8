"""The metrics of a classification or regression label space (GLUE's official ones), computed with scikit-learn
and scipy (the `evaluate` hub metrics need a network)."""

from collections.abc import Callable
from typing import Protocol

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


class LabelSpace(Protocol):
    """What a sequence-classification task's labels are (a GLUE task's `GlueTask`, a task of one's own)."""

    num_labels: int  # 1 for a regression
    is_regression: bool
    metrics: tuple  # names in METRIC_FUNCTIONS, or in the space's own `metric_functions`
    primary_metric: str  # the one that picks the best evaluation; higher is better unless `higher_is_better` is False


METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda pred, ref: accuracy_score(ref, pred),
    "f1": lambda pred, ref: f1_score(ref, pred),
    "matthews_correlation": lambda pred, ref: matthews_corrcoef(ref, pred),
    "pearson": lambda pred, ref: pearsonr(pred, ref)[0],
    "spearmanr": lambda pred, ref: spearmanr(pred, ref)[0],
}


def task_metrics(task: LabelSpace, predictions: np.ndarray, references: np.ndarray) -> dict[str, float]:
    """The task's metrics for class ids (or regression scores) `predictions` against `references`."""
    functions = {**METRIC_FUNCTIONS, **getattr(task, "metric_functions", {})}
    return {name: float(functions[name](predictions, references)) for name in task.metrics}


def predictions_from_logits(task: LabelSpace, logits: np.ndarray) -> np.ndarray:
    if isinstance(logits, tuple):
        logits = logits[0]
    return np.squeeze(logits, axis=-1) if task.is_regression else np.argmax(logits, axis=-1)


def trainer_metrics_fn(task: LabelSpace) -> Callable:
    """`compute_metrics` for a Trainer evaluating `task`."""

    def compute(eval_prediction) -> dict[str, float]:
        predictions = predictions_from_logits(task, eval_prediction.predictions)
        return task_metrics(task, predictions, np.asarray(eval_prediction.label_ids))

    return compute
