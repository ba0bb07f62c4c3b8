"""Model loading for every task: a hub id, a local folder or an embedded default, checked before anything loads;
4/8-bit bases (the only place quantization is configured) prepared for k-bit training."""

import importlib.util
import logging
import os
from pathlib import Path

import torch
from accelerate import PartialState
from peft import prepare_model_for_kbit_training
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from lorakit.core.errors import ConfigError, one_line
from lorakit.core.run_folder import safetensors_whole
from lorakit.models.arguments import EMBEDDED_CAUSAL_LM, EMBEDDED_ENCODER, ModelArguments
from lorakit.models.embedded import embedded_causal_lm_dir, embedded_encoder_dir

logger = logging.getLogger(__name__)


CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
POSITION_OFFSET_MODELS = ("roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text")  # positions from pad+1
WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
LOCAL_PREFIXES = ("/", "./", "../", "~", ".\\")


def resolve_model_path(name_or_path: str) -> str:
    """A hub id or local path as given; an embedded model's name becomes its local folder (fetched once)."""
    embedded = {EMBEDDED_ENCODER: embedded_encoder_dir, EMBEDDED_CAUSAL_LM: embedded_causal_lm_dir}
    return str(embedded[name_or_path]()) if name_or_path in embedded else name_or_path


def check_local_model(model_path: str, model_args: ModelArguments) -> None:
    """A local model must be a folder holding a config and weights (or the named GGUF file); a missing path that
    reads as a local one is an error here, not a hub lookup."""
    path = Path(model_path).expanduser()
    if not path.exists():
        if model_path.startswith(LOCAL_PREFIXES):
            raise ConfigError(f"model_name_or_path: no such folder: {model_path}")
        return  # a hub id
    if not path.is_dir():
        hint = " (give its folder, and the file as --gguf_file)" if path.suffix == ".gguf" else ""
        raise ConfigError(f"model_name_or_path: {model_path} is a file, not a model folder{hint}")
    if model_args.gguf_file:
        if not (path / model_args.gguf_file).is_file():
            raise ConfigError(f"gguf_file: no file {model_args.gguf_file} in {model_path}")
        return
    if not (path / "config.json").is_file():
        raise ConfigError(f"model_name_or_path: {model_path} holds no config.json (not a model folder)")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHTS):
        raise ConfigError(f"model_name_or_path: {model_path} holds no weights (*.safetensors or *.bin)")
    broken = next((f for f in sorted(path.glob("*.safetensors")) if not safetensors_whole(f)), None)
    if broken is not None:
        raise ConfigError(f"model_name_or_path: {broken} is cut short or not a safetensors file")


def load_config(model_path: str, model_args: ModelArguments, **overrides):
    """The model's config alone (no weights), from a folder, the hub, or a GGUF file's metadata; a path that holds
    none, or a hub id the hub cannot give, is a one-line error."""
    check_local_model(model_path, model_args)
    try:
        return AutoConfig.from_pretrained(
            model_path, cache_dir=model_args.cache_dir, gguf_file=model_args.gguf_file, **overrides
        )
    except Exception as err:  # a config that does not parse, a field of the wrong type, a hub id the hub lacks
        raise ConfigError(
            f"model_name_or_path: cannot read a model config from {model_path} ({one_line(err)})"
        ) from None


def context_length(config) -> int | None:
    """The longest sequence the model's positions cover: the config's position limit, less RoBERTa's offset."""
    key = next((k for k in CONTEXT_KEYS if getattr(config, k, None)), None)
    if key is None:
        return None
    limit = getattr(config, key)
    if getattr(config, "model_type", None) in POSITION_OFFSET_MODELS and config.pad_token_id is not None:
        limit -= config.pad_token_id + 1
    return limit


def check_context(config, lengths: dict[str, int]) -> None:
    """Each named sequence length must fit the model's context (`context_length`)."""
    limit = context_length(config)
    for name, length in lengths.items():
        if limit is not None and length > limit:
            key = next(k for k in CONTEXT_KEYS if getattr(config, k, None))
            raise ConfigError(f"{name}: {length} tokens is above the model's context ({key} = {getattr(config, key)})")


def quantization_config(model_args: ModelArguments):
    """bitsandbytes settings for a quantized frozen base: 4-bit NF4 with double quantization and bf16 compute, or
    8-bit. None when neither is asked for."""
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        flag = "load_in_4bit" if model_args.load_in_4bit else "load_in_8bit"
        raise ConfigError(f"{flag}: needs the bitsandbytes package (pip install bitsandbytes)")
    from transformers import BitsAndBytesConfig

    if model_args.load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(**nf4_settings())


def nf4_settings() -> dict:
    """The 4-bit base: NF4, double quantization, bf16 compute; under FSDP its packed weights are stored in bf16, the
    dtype FSDP shards (one dtype per wrapped unit)."""
    settings = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True}
    settings["bnb_4bit_compute_dtype"] = torch.bfloat16
    return settings | ({"bnb_4bit_quant_storage": torch.bfloat16} if sharded() else {})


def sharded() -> bool:
    """Whether this process was launched by `accelerate launch` with an FSDP config (which sets ACCELERATE_USE_FSDP):
    a 4-bit base then stores its packed weights in bf16, is loaded without a device map, and keeps its bf16 norms
    (FSDP wraps one dtype per unit). The Trainer's own --fsdp flag (torchrun) sets nothing before the model loads, so a
    quantized base is refused under it (`check_sharded_quantization`). Runs on CPU processes in tests/test_sharded.py
    (unquantized) and on GPUs in tests/test_gpu.py; see launch/a10x4_fsdp_qlora.yaml."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1")


def check_sharded_quantization(model_args, fsdp) -> None:
    """A 4-bit base is sharded only under an accelerate FSDP launch, not under the Trainer's --fsdp flag; an 8-bit one
    not at all (nothing here stores its int8 weights in a dtype FSDP can flatten with the rest)."""
    four, eight = (getattr(model_args, f"load_in_{bits}bit", False) for bits in (4, 8))  # a task's own may have none
    if eight and (fsdp or sharded()):
        raise ConfigError("load_in_8bit: not under FSDP; shard a 4-bit base (--load_in_4bit true)")
    if fsdp and four and not sharded():
        raise ConfigError("fsdp: a quantized base is sharded only under accelerate launch --config_file "
                          "launch/a10x4_fsdp_qlora.yaml, which sets it up to shard; not under --fsdp")  # fmt: skip


def load_tokenizer(model_path: str, model_args: ModelArguments):
    """The model's tokenizer (or `tokenizer_name`'s); one that cannot be loaded is a one-line error."""
    gguf = {} if model_args.tokenizer_name else {"gguf_file": model_args.gguf_file}
    source = model_args.tokenizer_name or model_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, cache_dir=model_args.cache_dir, **gguf)
    except (OSError, ValueError, KeyError, TypeError) as err:
        field_name = "tokenizer_name" if model_args.tokenizer_name else "model_name_or_path"
        raise ConfigError(f"{field_name}: cannot load a tokenizer from {source} ({one_line(err)})") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise ConfigError(f"{source}: the tokenizer has neither a pad nor an EOS token to pad batches with")
    if tokenizer.pad_token is None:  # decoder-only models: pad with EOS for classification batches
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_sequence_classifier(model_path: str, num_labels: int, model_args: ModelArguments, pad_token_id: int):
    model = _load(AutoModelForSequenceClassification, model_path, model_args, num_labels=num_labels)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = pad_token_id
    # The classifiers' loss is the mean over the micro-batch and ignores `num_items_in_batch`, which the Trainer
    # would hand them because their forward takes **kwargs; told so, it divides by the accumulation steps instead.
    model.accepts_loss_kwargs = False
    return _prepare_quantized(model, gradient_checkpointing=True)


def load_causal_lm(model_path: str, model_args: ModelArguments, gradient_checkpointing: bool):
    """A causal LM for LoRA training; a quantized one is prepared for k-bit training (norms in fp32, inputs that
    carry gradients, non-reentrant checkpointing when asked for)."""
    model = _load(AutoModelForCausalLM, model_path, model_args)
    model.config.use_cache = False  # training; generation turns the cache on for itself
    return _prepare_quantized(model, gradient_checkpointing)


def _load(auto_class, model_path: str, model_args: ModelArguments, **kwargs):
    quant = quantization_config(model_args)
    placing = quant is not None and not sharded()
    placement = {"device_map": {"": PartialState().local_process_index}} if placing else {}
    return auto_class.from_pretrained(
        model_path,
        cache_dir=model_args.cache_dir,
        gguf_file=model_args.gguf_file,
        dtype=model_args.dtype,
        quantization_config=quant,
        **placement,
        **kwargs,
    )


def _prepare_quantized(model, gradient_checkpointing: bool):
    if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
        return model
    if sharded():  # no fp32 upcast of the norms: FSDP wraps one dtype per unit
        if gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
        return model
    return prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def restore_frozen_embedding(model) -> None:
    """Store a quantized model's frozen input embedding back in the checkpoint's 16-bit dtype, and hand its output on
    in fp32 as before.

    prepare_model_for_kbit_training upcasts every non-quantized weight to fp32. For the frozen embedding table that
    buys nothing: its values came from the 16-bit checkpoint, so both the cast back and the fp32 view of each looked-up
    row are exact, and the model computes exactly what it computed before, with half the table's memory (0.25 GiB on
    Llama-7b). Left alone: trainable (modules_to_save) or tied embeddings."""
    if not (getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)):
        return
    dtype = getattr(model.config, "dtype", None)
    embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
    if dtype not in (torch.bfloat16, torch.float16) or not isinstance(embedding, torch.nn.Embedding):
        return
    tied = output is not None and output.weight is embedding.weight
    if tied or embedding.weight.requires_grad or embedding.weight.dtype != torch.float32:
        return
    embedding.to(dtype)
    embedding.register_forward_hook(_as_float32)


def _as_float32(module, inputs, output: torch.Tensor) -> torch.Tensor:
    return output.float()
