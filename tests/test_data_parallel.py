"""Data parallelism: run_glue.py on 2 CPU processes (gloo, launched by torchrun) trains the adapter one process trains
at the same global batch, within 1e-5, under Init[A] and Init[B] with LoRA+ (a model without dropout, so that both do
the same arithmetic)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import run_glue

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("init", ["A", "B"])
def test_two_processes_train_the_adapter_of_one_at_the_same_global_batch(
    init, no_dropout_bert, tiny_glue_dir, tmp_path
):
    argv = ["--model_name_or_path", str(no_dropout_bert), "--task_name", "sst2", "--glue_dir", str(tiny_glue_dir),
            "--max_steps", "3", "--lora_dropout", "0", "--lora_init", init, "--loraplus_lr_ratio", "4",
            "--learning_rate", "5e-2", "--eval_strategy", "no", "--seed", "0", "--use_cpu", "true"]  # fmt: skip
    assert run_glue.main([*argv, "--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "one")]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(PROJECT / "run_glue.py")]
    two = [*argv, "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "two")]
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*torchrun, *two], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "run_config.json").read_text())["world_size"] == 2
    one, two = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("one", "two"))
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-5)
