"""GPU-only paths (fp16 training, 4-bit and 8-bit bases on CUDA); skipped on machines without CUDA, such as CI."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import run_glue
import run_llm
from init_schemes import InitSpec
from lorakit.models.arguments import ModelArguments
from lorakit.models.loading import load_causal_lm
from lorakit.models.lora import add_lora
from lorakit.tasks.lm.arguments import LmLoraArguments
from loraplus.groups import assert_partition, loraplus_param_groups

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_fp16_run_on_cuda(scheme, tiny_bert_dir, tiny_glue_dir, tmp_path):
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--glue_dir", str(tiny_glue_dir)]
    argv += ["--output_dir", str(tmp_path), "--max_steps", "3", "--fp16", "true", "--lora_init", scheme]
    assert run_glue.main(argv) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "done"


needs_bitsandbytes = pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None, reason="needs bitsandbytes")


def quantized_tiny_llama(tiny_llama_dir, flag: str = "load_in_4bit"):
    model_args = ModelArguments(model_name_or_path=str(tiny_llama_dir), torch_dtype="bfloat16", **{flag: True})
    return load_causal_lm(str(tiny_llama_dir), model_args, gradient_checkpointing=True)


@needs_bitsandbytes
@pytest.mark.parametrize("scheme", ["A", "B"])
def test_init_contract_and_loraplus_groups_on_a_4bit_base(scheme, tiny_llama_dir):
    import bitsandbytes as bnb

    model = quantized_tiny_llama(tiny_llama_dir)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    ids = torch.randint(4, 90, (2, 16), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    lora_args = LmLoraArguments(lora_r=4, lora_dropout=0.0)
    model, record = add_lora(model, lora_args, InitSpec(scheme, seed=1), "CAUSAL_LM")
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, expected)  # BA = 0 on the quantized base too
    assert model.get_base_model().get_input_embeddings().weight.dtype == torch.bfloat16  # stored back from fp32
    assert record["random_factor"] == scheme and record["num_lora_layers"] == 14
    assert_partition(model, loraplus_param_groups(model, lr=1e-3, loraplus_lr_ratio=16))


@needs_bitsandbytes
@pytest.mark.parametrize("flag, extra", [("load_in_4bit", ["--loraplus_lr_ratio", "16"]), ("load_in_8bit", [])])
def test_quantized_run_lowers_perplexity(flag, extra, tiny_llama_dir, tiny_corpus_dir, tmp_path):
    argv = ["--model_name_or_path", str(tiny_llama_dir), "--task_name", "text", "--data_dir", str(tiny_corpus_dir)]
    argv += ["--output_dir", str(tmp_path), f"--{flag}", "true", "--torch_dtype", "bfloat16", "--bf16", "true"]
    argv += ["--gradient_checkpointing", "true", "--optim", "paged_adamw_8bit", "--block_size", "64"]
    argv += ["--max_steps", "60", "--learning_rate", "5e-2", "--max_eval_samples", "0", "--lora_dropout", "0", *extra]
    assert run_llm.main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["final"]["perplexity"] < 0.9 * metrics["before"]["perplexity"]
    config = json.loads((tmp_path / "run_config.json").read_text())
    assert config["mixed_precision"] == "no"  # the base computes in bf16: no autocast over it


@needs_bitsandbytes
def test_a_pack_on_a_4bit_base_trains_each_configuration(tiny_llama_dir, tiny_corpus_dir, tmp_path):
    from lorakit.runs.pack import run_pack

    argv = ["--model_name_or_path", str(tiny_llama_dir), "--task_name", "text", "--data_dir", str(tiny_corpus_dir)]
    argv += ["--load_in_4bit", "true", "--torch_dtype", "bfloat16", "--bf16", "true", "--block_size", "64"]
    argv += ["--gradient_checkpointing", "true", "--optim", "paged_adamw_8bit", "--max_steps", "60"]
    argv += ["--max_eval_samples", "0", "--lora_dropout", "0", "--save_strategy", "steps", "--save_steps", "30"]
    configs = [("A", "5e-2", "1"), ("B", "5e-3", "16")]
    members = [
        [*argv, "--output_dir", str(tmp_path / f"m{i}"), "--lora_init", scheme, "--learning_rate", lr]
        + ["--loraplus_lr_ratio", ratio]
        for i, (scheme, lr, ratio) in enumerate(configs)
    ]
    assert run_pack("lm", members, str(tmp_path / "pack")) == 0
    for i in range(len(configs)):
        metrics = json.loads((tmp_path / f"m{i}" / "metrics.json").read_text())
        assert metrics["status"] == "done" and metrics["final"]["perplexity"] < 0.9 * metrics["before"]["perplexity"]
    checkpoint = tmp_path / "pack" / "checkpoint-30"
    assert (checkpoint / "pack_adapters.safetensors").is_file() and not list(checkpoint.glob("model*.safetensors"))


@needs_bitsandbytes
def test_the_fsdp_qlora_launch_config_trains_a_4bit_llama_on_every_gpu(tiny_llama_dir, tiny_corpus_dir, tmp_path):
    """launch/a10x4_fsdp_qlora.yaml as shipped (bf16, cpu-RAM-efficient loading, FULL_SHARD, sharded checkpoints),
    on all the machine's GPUs: the run trains, and its adapter is whole. On one GPU, FSDP shards nothing (NO_SHARD):
    that checks the 4-bit loading and the saves, not the sharded arithmetic (tests/test_sharded.py checks that, on CPU
    processes)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    gpus = torch.cuda.device_count()
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(PROJECT / "launch" /
              "a10x4_fsdp_qlora.yaml"), "--num_processes", str(gpus), "run_llm.py"]  # fmt: skip
    argv = ["--model_name_or_path", str(tiny_llama_dir), "--task_name", "text", "--data_dir", str(tiny_corpus_dir),
            "--load_in_4bit", "true", "--torch_dtype", "bfloat16", "--bf16", "true", "--block_size", "64",
            "--gradient_checkpointing", "true", "--optim", "adamw_torch", "--max_steps", "40", "--learning_rate",
            "5e-2", "--lora_init", "B", "--loraplus_lr_ratio", "16", "--max_eval_samples", "0", "--lora_dropout", "0",
            "--save_strategy", "steps", "--save_steps", "20", "--output_dir", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    done = subprocess.run([*launch, *argv], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["final"]["perplexity"] < 0.9 * metrics["before"]["perplexity"]
    assert json.loads((tmp_path / "run_config.json").read_text())["world_size"] == gpus
    adapter = load_file(tmp_path / "adapter_model.safetensors")
    assert len(adapter) == 28 and all(tensor.abs().max() > 0 for tensor in adapter.values())
    assert len(load_file(tmp_path / "checkpoint-20" / "adapter_model.safetensors")) == 28  # what a resume looks for
    base = load_causal_lm(str(tiny_llama_dir), ModelArguments(model_name_or_path=str(tiny_llama_dir)), False)
    loaded = PeftModel.from_pretrained(base, tmp_path).state_dict()
    for key, tensor in adapter.items():
        assert torch.equal(loaded[key.replace(".weight", ".default.weight")].cpu().to(tensor.dtype), tensor.cpu())


def test_the_kernel_profile_counts_the_kernels_of_a_gpu_step():
    from benchmarks.common import KernelTime

    a = torch.randn(2048, 2048, device="cuda")
    kernels = KernelTime()
    kernels.start()
    for _ in range(4):
        a = torch.tanh(a @ a)
    figures = kernels.stop(steps=2, step_seconds=1.0)
    assert "profile_error" not in figures, figures
    assert figures["kernels_per_step"] >= 4 and 0 < figures["kernel_ms_per_step"] < 1000
    assert 0 < figures["gpu_busy"] < 1
