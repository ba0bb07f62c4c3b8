"""Smoke tests on the real GLUE files in ../shared/data/glue, when that folder exists (never in a user's checkout)."""

import json

import pytest

import run_glue
from lorakit.tasks.glue.catalog import GLUE_TASKS
from lorakit.tasks.glue.data import read_data_file
from tests.conftest import SHARED_GLUE

pytestmark = pytest.mark.skipif(not SHARED_GLUE.is_dir(), reason="../shared/data/glue is not present")
ROWS = {  # from shared/data/MANIFEST.md
    ("cola", "CoLA/dev.tsv"): 1043,
    ("sst2", "SST-2/dev.tsv"): 872,
    ("mrpc", "MRPC/train.tsv"): 3668,
    ("stsb", "STS-B/dev.tsv"): 1500,
    ("mnli", "MNLI/dev_matched.jsonl"): 9815,
    ("qnli", "QNLI/dev.tsv"): 5463,
    ("rte", "RTE/train.tsv"): 2490,
    ("wnli", "WNLI/dev.tsv"): 71,
}


@pytest.mark.parametrize("task, path", ROWS, ids=lambda x: x if isinstance(x, str) and "/" not in x else None)
def test_real_glue_files_read_completely(task, path):
    examples = read_data_file(GLUE_TASKS[task], SHARED_GLUE / path)
    assert len(examples) == ROWS[task, path]
    assert all(len(e.texts) == len(GLUE_TASKS[task].text_fields) for e in examples)


SMOKE = {
    "sst2": ["--glue_dir", str(SHARED_GLUE)],
    # QNLI's train.tsv is not in ../shared; its dev file stands in for both splits.
    "qnli": [
        "--train_file",
        str(SHARED_GLUE / "QNLI/dev.tsv"),
        "--validation_file",
        str(SHARED_GLUE / "QNLI/dev.tsv"),
    ],
}


@pytest.mark.parametrize("task", SMOKE)
def test_smoke_run_with_the_embedded_encoder(task, tmp_path):
    argv = ["--task_name", task, *SMOKE[task], "--output_dir", str(tmp_path), "--max_steps", "4"]
    argv += ["--max_train_samples", "64", "--max_eval_samples", "64", "--per_device_train_batch_size", "8"]
    assert run_glue.main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "done" and 0 <= metrics["final"]["eval_accuracy"] <= 1
