"""Every config file the project ships parses; --config gives defaults that flags override."""

from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import ClusterConfig

import run_glue
import run_llm
from lorakit.core.errors import ConfigError
from lorakit.core.parsing import parse_args
from lorakit.models.loading import nf4_settings, sharded
from lorakit.sweeps.spec import GPU_FLAGS_OFF  # GPU-only flags set false: this machine has no CUDA

ARGUMENT_TYPES = run_glue.TASK.argument_types

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
CONFIGS = sorted(LAUNCH.glob("*.yaml"))


def is_accelerate_config(path: Path) -> bool:
    return "compute_environment" in yaml.safe_load(path.read_text())


def test_the_project_ships_configs():
    assert any(is_accelerate_config(p) for p in CONFIGS) and any(not is_accelerate_config(p) for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses(path, tmp_path):
    text = path.read_text()
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert text.startswith("#") and "accelerate launch --config_file" in header  # headed by the command that runs it
    if is_accelerate_config(path):
        ClusterConfig(**yaml.safe_load(text))
        return
    runner = run_llm if "run_llm.py" in header else run_glue
    assert f"{runner.__name__}.py --config launch/{path.name}" in header.replace("\\\n#", "")
    argv = ["--config", str(path), "--output_dir", str(tmp_path), *GPU_FLAGS_OFF]
    if yaml.safe_load(text).get("task_name") == "instruct":
        (tmp_path / "flan.jsonl").write_text('{"prompt": "Q", "response": "A"}\n')
        argv += ["--train_file", str(tmp_path / "flan.jsonl")]
    model, lora, data, train = parse_args(runner.TASK.argument_types, argv)
    assert model.model_name_or_path and lora.lora_r > 0 and train.learning_rate > 0


@pytest.mark.parametrize("path", [p for p in CONFIGS if is_accelerate_config(p)], ids=lambda p: p.name)
def test_accelerate_config_headers_name_a_shipped_recipe(path):
    header = path.read_text().split("\ncompute_environment")[0]
    for recipe in (word for word in header.split() if word.startswith("launch/") and word != f"launch/{path.name}"):
        assert (LAUNCH.parent / recipe).is_file(), recipe


def test_quantized_recipe_settings():
    model, lora, data, train = parse_args(
        run_llm.TASK.argument_types, ["--config", str(LAUNCH / "llama7b_4bit_gsm8k.yaml"), *GPU_FLAGS_OFF]
    )
    assert (model.torch_dtype, data.task_name, train.gradient_checkpointing, train.optim.value) == (
        "bfloat16",
        "gsm8k",
        True,
        "paged_adamw_8bit",
    )
    assert train.gradient_checkpointing_kwargs == {"use_reentrant": False}
    assert lora.lora_target_modules == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_paper_recipe_settings():
    model, lora, data, train = parse_args(
        ARGUMENT_TYPES, ["--config", str(LAUNCH / "roberta_large_glue.yaml"), "--fp16", "false"]
    )
    assert (model.model_name_or_path, lora.lora_r, lora.lora_dropout, lora.lora_target_modules) == (
        "roberta-large",
        8,
        0.1,
        ["query", "value"],
    )
    assert (data.max_seq_length, train.per_device_train_batch_size, train.num_train_epochs) == (128, 4, 10)
    assert (train.lr_scheduler_type.value, train.warmup_steps, train.weight_decay) == ("linear", 0.06, 0.0)


def test_flags_override_the_file_and_yaml_numbers_parse(tmp_path):
    (tmp_path / "run.yaml").write_text("learning_rate: 1e-4\nlora_r: 4\nlora_target_modules: [query, key]\n")
    _, lora, _, train = parse_args(ARGUMENT_TYPES, ["--config", str(tmp_path / "run.yaml"), "--lora_r", "16"])
    assert train.learning_rate == 1e-4 and lora.lora_r == 16 and lora.lora_target_modules == ["query", "key"]


def test_missing_config_file():
    with pytest.raises(ConfigError, match="config: file not found"):
        parse_args(ARGUMENT_TYPES, ["--config", "/no/such.yaml"])


@pytest.mark.parametrize("path", [p for p in CONFIGS if not is_accelerate_config(p)], ids=lambda p: p.name)
def test_every_recipe_says_where_its_settings_come_from(path):
    header = " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))
    assert "Appendix C" in header or "the toolkit's own" in header or "Provenance" in header


def test_a_4bit_base_sharded_by_fsdp_stores_its_weights_in_bf16(monkeypatch):
    """launch/a10x4_fsdp_qlora.yaml: under FSDP the packed 4-bit weights are stored in the dtype FSDP shards."""
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert "bnb_4bit_quant_storage" not in nf4_settings() and not sharded()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what accelerate launch sets for an FSDP config
    assert nf4_settings()["bnb_4bit_quant_storage"] == torch.bfloat16 and sharded()
