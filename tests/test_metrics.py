"""GLUE metrics against values computed by hand."""

import numpy as np
import pytest

from lorakit.tasks.glue.catalog import GLUE_TASKS
from lorakit.tasks.metrics import predictions_from_logits, task_metrics

BINARY_PRED, BINARY_REF = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 0, 1])
# tp = 2, tn = 2, fp = 1, fn = 0
HAND = {
    "accuracy": 4 / 5,
    "f1": 2 * 2 / (2 * 2 + 1 + 0),
    "matthews_correlation": (2 * 2 - 1 * 0) / np.sqrt((2 + 1) * (2 + 0) * (2 + 1) * (2 + 0)),
}


@pytest.mark.parametrize("task_name", ["cola", "sst2", "mrpc", "qqp", "qnli", "rte", "wnli", "movie_reviews"])
def test_binary_task_metrics(task_name):
    task = GLUE_TASKS[task_name]
    got = task_metrics(task, BINARY_PRED, BINARY_REF)
    assert set(got) == set(task.metrics)
    for name, value in got.items():
        assert value == pytest.approx(HAND[name])


def test_mnli_accuracy_over_three_classes():
    assert task_metrics(GLUE_TASKS["mnli"], np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == {"accuracy": 0.75}


def test_stsb_pearson_and_spearman():
    got = task_metrics(GLUE_TASKS["stsb"], np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    # pearson: cov = 3, var_pred = 2, var_ref = 42/9
    assert got["pearson"] == pytest.approx(3 / np.sqrt(2 * 42 / 9))
    got = task_metrics(GLUE_TASKS["stsb"], np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0, 2.0]))
    # spearman: d² = 4 + 1 + 1 = 6, rho = 1 - 6·6 / (3·(9 - 1))
    assert got["spearmanr"] == pytest.approx(1 - 6 * 6 / (3 * 8))


def test_predictions_from_logits():
    assert predictions_from_logits(GLUE_TASKS["sst2"], np.array([[0.1, 0.9], [2.0, -1.0]])).tolist() == [1, 0]
    assert predictions_from_logits(GLUE_TASKS["stsb"], np.array([[0.5], [3.0]])).tolist() == [0.5, 3.0]
