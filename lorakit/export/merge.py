"""A finished run's adapter merged into its base (W + BA·α/r in every LoRA layer, the trained head in place), saved in
HF format with the tokenizer and a record of where it came from (``export.json``)."""

from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoTokenizer

from lorakit.core.atomic import write_json_atomic
from lorakit.core.errors import ConfigError
from lorakit.core.run_folder import read_json_file
from lorakit.models.arguments import ModelArguments
from lorakit.models.loading import load_causal_lm, load_sequence_classifier, resolve_model_path
from lorakit.models.lora import head_labels
from lorakit.training.records import library_versions

TASK_TYPES = ("SEQ_CLS", "CAUSAL_LM")


def base_path(config: dict, model_args: ModelArguments) -> str:
    """The base the run trained on: the path it recorded where it still exists, else its model id resolved again
    (an embedded default is fetched, a hub id downloaded)."""
    recorded = config.get("model_path")
    return recorded if recorded and Path(recorded).exists() else resolve_model_path(model_args.model_name_or_path)


def load_base(run_dir: Path, config: dict, task_type: str, tokenizer):
    model = dict(config.get("model") or {})
    unquantized = {"load_in_4bit": False, "load_in_8bit": False, "torch_dtype": "float32"}  # merged in fp32
    model_args = ModelArguments(**(model | unquantized))
    path = base_path(config, model_args)
    if task_type == "SEQ_CLS":
        return load_sequence_classifier(path, head_labels(run_dir), model_args, tokenizer.pad_token_id), path
    return load_causal_lm(path, model_args, gradient_checkpointing=False), path


def merge_run(run_dir: Path, output_dir: Path) -> Path:
    """Merge `run_dir`'s adapter into its base and save the result (and the tokenizer) in `output_dir`."""
    config = read_json_file(run_dir / "run_config.json") or {}
    task_type = (read_json_file(run_dir / "adapter_config.json") or {}).get("task_type")
    if task_type not in TASK_TYPES:
        raise ConfigError(f"run_dir: cannot merge a {task_type} adapter (known: {', '.join(TASK_TYPES)})")
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    base, path = load_base(run_dir, config, task_type, tokenizer)
    merged = PeftModel.from_pretrained(base, run_dir).merge_and_unload()
    dtype = getattr(torch, str((config.get("model") or {}).get("torch_dtype", "float32")), torch.float32)
    merged = merged.to(dtype if isinstance(dtype, torch.dtype) else torch.float32)  # the run's dtype, once merged
    merged.config.use_cache = True  # loaded for training without it; a served model wants it
    merged.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    record = {"merged_from": str(run_dir.resolve()), "base": path, "task_type": task_type}
    record |= {"init": config.get("init"), "versions": library_versions()}
    write_json_atomic(output_dir / "export.json", record)
    return output_dir
