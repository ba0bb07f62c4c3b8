"""LoRA on a loaded model: stock PEFT wraps it, then the init scheme and the freezing options apply; and the check of
targets and rank against an architecture built from its config alone."""

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification

from init_schemes import InitSpec, apply_init, peft_init_value
from lorakit.core.errors import ConfigError
from lorakit.models.arguments import LoraArguments
from lorakit.models.loading import restore_frozen_embedding


def _targets(model: torch.nn.Module, target_names: list[str]):
    for name, module in model.named_modules():
        if any(name == t or name.endswith(f".{t}") for t in target_names):
            yield name, module


def check_lora_shapes(config, lora_args: LoraArguments, auto_class=AutoModelForSequenceClassification) -> None:
    """Check targets and rank against the architecture, built on the meta device (config only, no weights): every
    target name must match a module (a typo is not silently skipped), and of `modules_to_save` (alternatives across
    architectures, like the default classifier/score) at least one."""
    with torch.device("meta"):
        skeleton = auto_class.from_config(config)
    where = config.name_or_path or config.model_type
    for target in lora_args.lora_target_modules:
        if not any(True for _ in _targets(skeleton, [target])):
            raise ConfigError(f"lora_target_modules: no module named {target!r} in {where}")
    saved = lora_args.modules_to_save
    if saved and not any(True for _ in _targets(skeleton, saved)):
        raise ConfigError(f"modules_to_save: no module named {' or '.join(saved)} in {where}")
    for name, module in _targets(skeleton, lora_args.lora_target_modules):
        weight = getattr(module, "weight", None)
        if weight is not None and weight.ndim >= 2 and lora_args.lora_r > min(weight.shape[0], weight[0].numel()):
            shape = "×".join(map(str, weight.shape))
            raise ConfigError(f"lora_r: {lora_args.lora_r} is larger than layer {name} ({shape})")


def add_lora(model: torch.nn.Module, lora_args: LoraArguments, spec: InitSpec, task_type: str) -> tuple:
    """Wrap `model` with stock PEFT LoRA, then apply the init scheme and the freezing options.

    Returns the PEFT model and the init record for the run's resolved config.
    """
    config = LoraConfig(
        task_type=task_type,
        r=lora_args.lora_r,
        lora_alpha=lora_args.lora_alpha,
        lora_dropout=lora_args.lora_dropout,
        target_modules=list(lora_args.lora_target_modules),
        modules_to_save=list(lora_args.modules_to_save) or None,
        init_lora_weights=peft_init_value(spec.scheme),
    )
    model = get_peft_model(model, config)
    restore_frozen_embedding(model.get_base_model())
    record = apply_init(model, spec)
    for name, param in model.named_parameters():
        frozen_head = lora_args.freeze_head_dense and ".modules_to_save." in name and ".dense." in name
        frozen_a = lora_args.freeze_lora_A and ("lora_A." in name or "lora_embedding_A." in name)
        if frozen_head or frozen_a:
            param.requires_grad_(False)
    return model, record


def trainable_summary(model: torch.nn.Module) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"


HEAD_WEIGHTS = ("classifier.out_proj.weight", "classifier.weight", "score.weight")  # RoBERTa, BERT, decoders


def head_labels(run_dir: Path) -> int:
    """The number of labels of a classifier run: the rows of the head it trained (saved with the adapter)."""
    with safe_open(str(run_dir / "adapter_model.safetensors"), "pt") as weights:
        for key in weights.keys():
            if key.endswith(HEAD_WEIGHTS):
                return weights.get_slice(key).get_shape()[0]
    raise ConfigError(f"{run_dir}: the adapter holds no classifier head ({', '.join(HEAD_WEIGHTS)})")
