"""Sharded training: the FSDP launch config (launch/a10x4_fsdp_qlora.yaml) run on 2 CPU processes trains the adapter
one process trains at the same global batch, under Init[A] and Init[B] with LoRA+, saves it, resumes exactly from
its checkpoint and loads its best checkpoint when asked; and the pieces that make that so (the LoRA+ rule on
FSDP-flattened parameters, PEFT's adapter selection under nested FSDP units, the refusal of a quantized base under the
Trainer's own --fsdp).

Run before these existed, the config finished "done" with an empty adapter (or none, by the stock save), every LoRA
factor in group B, checkpoints without the adapter, and resumes that started AdamW's state from nothing.

accelerate runs FSDP only on accelerators; tests/fsdp_on_cpu.py lets it run on CPUs (what it changes is in its
docstring). The base is not quantized here (bitsandbytes' 4-bit needs a GPU; tests/test_gpu.py runs the config with
it). The comparison with one process uses SGD, whose update is linear in the gradient: with AdamW, elements whose
gradient is near zero turn summation-order noise into differences of about 1e-4 after 3 steps."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file
from torch import nn

import run_llm
from lorakit.core.errors import ConfigError
from lorakit.models.loading import check_sharded_quantization
from lorakit.training.sharded_save import plain_module_names
from loraplus import loraplus_param_groups, param_ndims, plain_name

PROJECT = Path(__file__).resolve().parents[1]
CONFIG = PROJECT / "launch" / "a10x4_fsdp_qlora.yaml"


def launch_on_two_cpu_processes(argv: list[str], flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG), "--num_processes", "2",
              "--mixed_precision", "no", "--fsdp_cpu_ram_efficient_loading", "false",
              "--fsdp_sync_module_states", "false", *flags, str(PROJECT / "tests" / "fsdp_on_cpu.py"),
              "run_llm.py"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launch, *argv], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def lm_argv(tiny_llama_dir: Path, tiny_corpus_dir: Path, init: str, optim: str, lr: str) -> list[str]:
    return ["--model_name_or_path", str(tiny_llama_dir), "--task_name", "text", "--data_dir", str(tiny_corpus_dir),
            "--block_size", "32", "--lora_dropout", "0", "--lora_init", init, "--loraplus_lr_ratio", "4",
            "--optim", optim, "--learning_rate", lr, "--max_grad_norm", "1", "--eval_strategy", "no", "--seed", "0",
            "--use_cpu", "true"]  # fmt: skip


@pytest.mark.parametrize("init, fsdp_version", [("A", "1"), ("B", "1"), ("B", "2")])
def test_the_fsdp_config_on_two_processes_trains_the_adapter_of_one(
    init, fsdp_version, tiny_llama_dir, tiny_corpus_dir, tmp_path
):
    """The shipped config (FSDP1), and with FSDP2 (the default of the Trainer's own --fsdp flag)."""
    argv = [*lm_argv(tiny_llama_dir, tiny_corpus_dir, init, "sgd", "0.5"), "--max_steps", "3"]
    assert run_llm.main([*argv, "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "one")]) == 0
    two = [*argv, "--per_device_train_batch_size", "2", "--output_dir", str(tmp_path / "two")]
    done = launch_on_two_cpu_processes(two, ("--fsdp_version", fsdp_version))
    assert "LoRA+ optimizer groups" in done.stderr
    assert "_fsdp_wrapped_module" not in done.stderr  # plain names in its table (FSDP1's wrappers insert the parts)
    record = json.loads((tmp_path / "two" / "run_config.json").read_text())
    assert record["world_size"] == 2
    assert json.loads((tmp_path / "two" / "metrics.json").read_text())["attempts"][-1]["world_size"] == 2
    one, two = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("one", "two"))
    assert len(one) == 28 and one.keys() == two.keys()
    assert all(one[key].abs().max() > 0 for key in one)  # both factors trained away from the zero one
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-5, rtol=1e-5)


def test_a_sharded_run_resumed_from_its_checkpoint_ends_where_the_uninterrupted_run_ends(
    tiny_llama_dir, tiny_corpus_dir, tmp_path
):
    """AdamW: the checkpoint's shards hold the adapter and the optimizer's moments, and the resume loads both."""
    argv = [*lm_argv(tiny_llama_dir, tiny_corpus_dir, "B", "adamw_torch", "1e-2"), "--max_steps", "4"]
    argv += ["--per_device_train_batch_size", "2", "--save_strategy", "steps", "--save_steps", "2"]
    launch_on_two_cpu_processes([*argv, "--output_dir", str(tmp_path / "whole")])
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    assert len(load_file(checkpoint / "adapter_model.safetensors")) == 28  # what a resume looks for
    shutil.copytree(checkpoint, tmp_path / "resumed" / "checkpoint-2")  # a run killed after step 2's checkpoint
    launch_on_two_cpu_processes([*argv, "--output_dir", str(tmp_path / "resumed")])
    attempts = json.loads((tmp_path / "resumed" / "metrics.json").read_text())["attempts"]
    assert [a["resumed_from_step"] for a in attempts] == [2]
    whole, resumed = (load_file(tmp_path / name / "adapter_model.safetensors") for name in ("whole", "resumed"))
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], atol=1e-7, rtol=0)


def test_a_sharded_run_ends_with_its_best_checkpoints_adapter_when_asked(tiny_llama_dir, tiny_corpus_dir, tmp_path):
    """load_best_model_at_end with "best" the higher eval loss, so the step-2 checkpoint, not the last one."""
    argv = [*lm_argv(tiny_llama_dir, tiny_corpus_dir, "B", "adamw_torch", "1e-2"), "--max_steps", "4"]
    argv += ["--per_device_train_batch_size", "2", "--save_strategy", "steps", "--save_steps", "2", "--eval_strategy",
             "steps", "--eval_steps", "2", "--max_eval_samples", "4", "--load_best_model_at_end", "true",
             "--metric_for_best_model", "loss", "--greater_is_better", "true"]  # fmt: skip
    launch_on_two_cpu_processes([*argv, "--output_dir", str(tmp_path)])
    state = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())
    assert Path(state["best_model_checkpoint"]).name == "checkpoint-2"
    final, best, last = (load_file(tmp_path / folder / "adapter_model.safetensors") for folder in
                         (".", "checkpoint-2", "checkpoint-4"))  # fmt: skip
    assert any(not torch.equal(best[key], last[key]) for key in best)
    for key in best:
        torch.testing.assert_close(final[key], best[key], atol=0, rtol=0)


class Wrapped(nn.Module):
    """Stands in for an FSDP unit: the module it wraps is its `_fsdp_wrapped_module` child."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self._fsdp_wrapped_module = module


def tiny_lora_model() -> nn.Module:
    torch.manual_seed(0)
    base = nn.Sequential()
    base.add_module("attn", nn.Linear(8, 8))
    base.add_module("norm", nn.LayerNorm(8))
    base.add_module("out", nn.Linear(8, 2))
    return get_peft_model(base, LoraConfig(r=2, target_modules=["attn"], modules_to_save=["norm"]))


def wrap_like_fsdp(model: nn.Module) -> nn.Module:
    """Nest the first layer and each LoRA factor in a unit, and make every parameter a 1-D view of itself, as FSDP
    with use_orig_params leaves them."""
    inner = model.base_model.model
    lora = inner.attn
    for factors in (lora.lora_A, lora.lora_B):
        factors["default"] = Wrapped(factors["default"])
    inner.attn = Wrapped(lora)
    for param in model.parameters():
        param.data = param.data.reshape(-1)
    return Wrapped(model)


def test_the_loraplus_rule_groups_an_fsdp_flattened_model_as_it_was_built():
    model = tiny_lora_model()
    built = loraplus_param_groups(model, lr=1.0, loraplus_lr_ratio=4.0)
    ndims = param_ndims(model)
    wrapped = wrap_like_fsdp(model)
    assert all(p.ndim == 1 for p in wrapped.parameters())
    with pytest.raises(ValueError, match="pass ndims=param_ndims"):
        loraplus_param_groups(wrapped, lr=1.0, loraplus_lr_ratio=4.0)
    flattened = loraplus_param_groups(wrapped, lr=1.0, loraplus_lr_ratio=4.0, ndims=ndims)
    summary = [(g["name"], g["lr"], g["weight_decay"], g["param_names"]) for g in flattened]
    assert summary == [(g["name"], g["lr"], g["weight_decay"], g["param_names"]) for g in built]
    assert [g["name"] for g in flattened] == ["A", "B", "B_no_decay"]
    assert plain_name("_fsdp_wrapped_module.a._fsdp_wrapped_module.b._checkpoint_wrapped_module.c") == "a.b.c"


def test_peft_finds_the_adapter_in_a_gathered_state_dict_of_nested_units_only_by_plain_names():
    model = tiny_lora_model()
    gathered = model.state_dict()  # a full state dict of a sharded model has the names as built
    expected = get_peft_model_state_dict(model, state_dict=gathered)
    assert len(expected) == 4  # lora_A, lora_B, the norm's weight and bias
    wrapped = wrap_like_fsdp(model)._fsdp_wrapped_module  # what the Trainer's save unwraps to
    assert get_peft_model_state_dict(wrapped, state_dict=gathered).keys() < expected.keys()  # PEFT 0.21 misses
    with plain_module_names(wrapped):
        assert get_peft_model_state_dict(wrapped, state_dict=gathered).keys() == expected.keys()
    assert "named_modules" not in vars(wrapped)  # the model's own walk is back


def test_a_quantized_base_is_refused_under_the_trainers_own_fsdp_flag_and_8_bit_under_any(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    four, eight = (SimpleNamespace(load_in_4bit=bits == 4, load_in_8bit=bits == 8) for bits in (4, 8))
    with pytest.raises(ConfigError, match="accelerate launch --config_file launch/a10x4_fsdp_qlora.yaml"):
        check_sharded_quantization(four, True)
    with pytest.raises(ConfigError, match="load_in_8bit: not under FSDP"):
        check_sharded_quantization(eight, True)
    check_sharded_quantization(four, False)  # no sharding
    check_sharded_quantization(eight, False)
    check_sharded_quantization(SimpleNamespace(load_in_4bit=False, load_in_8bit=False), True)  # nothing quantized
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    check_sharded_quantization(four, True)  # accelerate's FSDP launch
    with pytest.raises(ConfigError, match="load_in_8bit: not under FSDP"):
        check_sharded_quantization(eight, False)
