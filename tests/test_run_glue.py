"""run_glue.py end to end on tiny random models: all nine GLUE tasks, reloadable adapters, divergence, accelerate."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

import run_glue
from lorakit.tasks.glue.catalog import GLUE_TASKS
from lorakit.tasks.glue.data import GlueDataArguments, load_task_data
from lorakit.tasks.metrics import predictions_from_logits, task_metrics
from lorakit.training.records import RunRecorder

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max_steps", "3", "--per_device_train_batch_size", "8", "--logging_steps", "1", "--eval_strategy", "no"]
GLUE_NAMES = [name for name in GLUE_TASKS if name != "movie_reviews"]


def run(tiny_bert_dir, glue_dir, out: Path, task: str, *extra: str) -> dict:
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", task, "--glue_dir", str(glue_dir)]
    assert run_glue.main([*argv, "--output_dir", str(out), *FAST, *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("task", GLUE_NAMES)
def test_each_glue_task_trains_a_few_steps(task, tiny_bert_dir, tiny_glue_dir, tmp_path):
    metrics = run(tiny_bert_dir, tiny_glue_dir, tmp_path, task, "--lora_init", "B" if task in ("rte", "qqp") else "A")
    assert metrics["status"] == "done"
    evals = ("matched", "mismatched") if task == "mnli" else ("",)
    for name in GLUE_TASKS[task].metrics:
        for split in evals:
            key = f"eval_{split}_{name}" if split else f"eval_{name}"
            assert np.isfinite(metrics["final"][key]), key
    config = json.loads((tmp_path / "run_config.json").read_text())
    assert config["data"]["task_name"] == task and config["versions"]["peft"] == "0.21.0"


def evaluate_reloaded(model_dir: Path, adapter_dir: Path, data_args: GlueDataArguments) -> float:
    """Accuracy of stock `PeftModel.from_pretrained` on the run's validation set."""
    task = data_args.task
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=task.num_labels)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    examples = load_task_data(data_args).evals["validation"]
    collate = DataCollatorWithPadding(tokenizer)
    predictions = []
    for start in range(0, len(examples), 64):
        chunk = examples[start : start + 64]
        batch = collate([tokenizer(*e.texts, truncation=True, max_length=data_args.max_seq_length) for e in chunk])
        with torch.no_grad():
            predictions.append(predictions_from_logits(task, model(**batch).logits.numpy()))
    labels = np.array([e.label for e in examples])
    return task_metrics(task, np.concatenate(predictions), labels)["accuracy"]


def test_saved_adapter_reloads_with_stock_peft_and_reproduces_accuracy(tiny_bert_dir, tiny_glue_dir, tmp_path):
    metrics = run(
        tiny_bert_dir, tiny_glue_dir, tmp_path, "sst2", "--loraplus_lr_ratio", "4", "--learning_rate", "1e-2"
    )
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "adapter_model.safetensors").is_file()
    data_args = GlueDataArguments(task_name="sst2", glue_dir=str(tiny_glue_dir))
    assert evaluate_reloaded(tiny_bert_dir, tmp_path, data_args) == pytest.approx(metrics["final"]["eval_accuracy"])
    config = json.loads((tmp_path / "run_config.json").read_text())
    assert config["init"]["scheme"] == "A" and config["init"]["random_factor"] == "A"
    assert [g["name"] for g in config["optimizer_groups"]] == ["A", "B", "B_no_decay"]


def test_absurd_learning_rate_ends_as_diverged_with_exit_zero(tiny_bert_dir, tiny_glue_dir, tmp_path):
    metrics = run(tiny_bert_dir, tiny_glue_dir, tmp_path, "sst2", "--learning_rate", "1e6", "--max_steps", "20")
    assert metrics["status"] == "diverged"
    assert 1 <= metrics["diverged_at_step"] <= 20 and metrics["reason"]
    assert not (tmp_path / "adapter_model.safetensors").exists()


def test_evaluations_are_recorded_as_they_happen(tiny_bert_dir, tiny_glue_dir, tmp_path):
    metrics = run(tiny_bert_dir, tiny_glue_dir, tmp_path, "cola", "--eval_strategy", "steps", "--eval_steps", "1")
    assert [e["step"] for e in metrics["evaluations"]] == [1, 2, 3]
    assert metrics["final"] == metrics["evaluations"][-1]  # the last-step evaluation is reused, not repeated
    assert metrics["best"]["eval_matthews_correlation"] == max(
        e["eval_matthews_correlation"] for e in metrics["evaluations"]
    )


def test_accelerate_launch_with_the_cpu_config(tiny_bert_dir, tiny_glue_dir, tmp_path):
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--config_file", "launch/cpu.yaml", "run_glue.py", "--lora_init", "B"]
    command += ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "rte", "--glue_dir", str(tiny_glue_dir)]
    command += ["--output_dir", str(tmp_path), *FAST]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    config = json.loads((tmp_path / "run_config.json").read_text())
    assert metrics["status"] == "done" and config["init"]["scheme"] == "B"


def test_recorder_keeps_earlier_evaluations_when_a_run_resumes(tmp_path):
    first = RunRecorder(str(tmp_path), "accuracy")
    first.add_evaluation({"eval_accuracy": 0.7}, step=10, epoch=1.0)
    first.finish("failed", error="KeyboardInterrupt: ")
    resumed = RunRecorder(str(tmp_path), "accuracy", resume=True)
    resumed.add_evaluation({"eval_accuracy": 0.6}, step=20, epoch=2.0)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["step"] for e in saved["evaluations"]] == [10, 20] and saved["status"] == "running"
    assert saved["best"]["step"] == 10
    fresh = RunRecorder(str(tmp_path), "accuracy")
    assert fresh.state["evaluations"] == []


def test_two_accumulated_micro_batches_train_as_one_batch_of_their_size(no_dropout_bert, tiny_glue_dir, tmp_path):
    """With gradient accumulation the logged loss, the clipped gradient and the divergence threshold are those of
    the whole batch's mean loss, not of its sum over micro-batches."""
    settings = ["--lora_dropout", "0", "--learning_rate", "3e-3", "--save_strategy", "steps", "--save_steps", "6"]
    settings += ["--max_steps", "6", "--max_grad_norm", "0.05"]
    whole = run(no_dropout_bert, tiny_glue_dir, tmp_path / "whole", "sst2", *settings)
    halves = ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2"]
    split = run(no_dropout_bert, tiny_glue_dir, tmp_path / "split", "sst2", *settings, *halves)
    assert whole["status"] == split["status"] == "done"

    def logged(out: Path) -> list[float]:
        state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
        return [row["loss"] for row in state["log_history"] if "loss" in row]

    assert len(logged(tmp_path / "whole")) == 6
    assert logged(tmp_path / "split") == pytest.approx(logged(tmp_path / "whole"), rel=1e-5)
    assert split["final"]["eval_loss"] == pytest.approx(whole["final"]["eval_loss"], rel=1e-5)
