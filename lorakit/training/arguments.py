"""The training arguments every task shares: the Trainer's, LoRA+'s per-matrix learning rates, the init scheme, the
precision policy and the run folder's, each number checked against its range before anything loads."""

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments

from init_schemes import InitSpec
from lorakit.core.errors import ConfigError, one_line
from lorakit.core.fields import COUNT, NON_NEGATIVE, POSITIVE, POSITIVE_INT, PROBABILITY, SEED, Range, check_fields
from lorakit.models.arguments import LoraArguments, require_cuda
from lorakit.training.precision import mixed_precision
from loraplus import DEFAULT_LR_EMBEDDING, loraplus_param_groups, param_group_summary

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


@dataclass
class LoraTrainingArguments(TrainingArguments):
    """`TrainingArguments` + LoRA+'s per-matrix learning rates + the precision policy: what `LoraTrainer` reads."""

    loraplus_lr_ratio: float | None = field(
        default=None,
        metadata={
            "help": "LoRA+ ratio lr_B / lr_A. Unset: the Trainer's default optimizer (one lr for all).",
            "rule": Range(low=0, low_open=True, optional=True),
        },
    )
    loraplus_lr_embedding: float = field(
        default=DEFAULT_LR_EMBEDDING,
        metadata={"help": "LoRA+ learning rate of embedding LoRA factors.", "rule": POSITIVE},
    )
    loraplus_head_group: bool = field(
        default=False,
        metadata={
            "help": "Put the task head (modules_to_save) in its own group at the base lr instead of A/B groups."
        },
    )

    autocast: str = field(
        default="auto",
        metadata={
            "help": "bf16 autocast: on, off, or auto (off when every LoRA base layer already computes in 16 bits, "
            "a bf16 base or a 4-bit one with bf16 compute: the model then runs as the stock stack runs it, LoRA and "
            "any fp32 leftovers in fp32, faster at small batches; on gives bf16 math and less activation memory)."
        },
    )

    def __post_init__(self) -> None:
        if self.autocast not in ("auto", "on", "off"):
            raise ConfigError(f"autocast: must be auto, on or off, got {self.autocast!r}")
        check_fields(self, TRAINER_RULES)
        super().__post_init__()

    def loraplus_groups(self, model, ndims: dict[str, int] | None = None) -> list[dict]:
        """The LoRA+ parameter groups these arguments give `model` (requires `loraplus_lr_ratio`; `ndims` as in
        `loraplus_param_groups`, for a model FSDP has wrapped)."""
        return loraplus_param_groups(
            model,
            lr=self.learning_rate,
            loraplus_lr_ratio=self.loraplus_lr_ratio,
            loraplus_lr_embedding=self.loraplus_lr_embedding,
            weight_decay=self.weight_decay,
            head_group=self.loraplus_head_group,
            ndims=ndims,
        )

    def mixed_precision_for(self, model) -> str:
        """The mixed precision the Trainer runs `model` in: the requested one, except that bf16 autocast is dropped
        under `autocast` auto when the LoRA base layers already compute in 16 bits. Then autocast would only re-cast
        the fp32 LoRA factors and leftovers every step, which made a QLoRA step at batch 1 about 10 % slower on an
        H100 (docs/benchmarks.md). Without it the model runs as the stock stack runs it: the LoRA branch in fp32, as
        PEFT keeps its factors, and so is whatever else is fp32 (a k-bit model's norms and lm_head)."""
        return mixed_precision(self.mixed_precision, self.autocast, model)

    def training_record(self, model) -> dict:
        """The optimizer groups and the mixed precision, for the run's resolved config."""
        precision = {"mixed_precision": self.mixed_precision_for(model)}
        if self.loraplus_lr_ratio is None:
            return {"optimizer_groups": "Trainer default: one learning rate for all trainable parameters", **precision}
        return {"optimizer_groups": param_group_summary(self.loraplus_groups(model)), **precision}


@dataclass
class TrainArguments(LoraTrainingArguments):
    """`TrainingArguments` + LoRA+ + the init scheme, with defaults for a short CPU run of the embedded task."""

    lora_init: str = field(default="A", metadata={"help": "Init scheme: A, B, or a PEFT scheme (gaussian, pissa, …)."})
    lora_init_distribution: str = field(
        default="kaiming_uniform", metadata={"help": "Random factor's distribution: kaiming_uniform or normal."}
    )
    lora_init_scale: float = field(
        default=1.0,
        metadata={"help": "Random factor's std multiplier: variance = scale² / (3·fan_in).", "rule": POSITIVE},
    )
    lora_diagnostics_steps: int | None = field(
        default=None,
        metadata={
            "help": "Measure the LoRA dynamics at step 1 and every N steps (RMS of Z_A = A·x and of its initial and "
            "update parts, of Z_B, of the feature update's parts δ¹ δ² δ³; the factors' norms and movement) into "
            "diagnostics.jsonl and the Trainer's log. Off by default.",
            "rule": Range(low=1, integer=True, optional=True),
        },
    )
    lora_diagnostics_tokens: int = field(
        default=512,
        metadata={
            "help": "Input rows (token positions, padding included) per layer a diagnostic step measures: the "
            "step's first ones, kept on the layer's device (memory: tokens × the layers' summed fan-in, × K in a "
            "pack of K).",
            "rule": POSITIVE_INT,
        },
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
        if self.output_dir is not None and not self.output_dir.strip():
            raise ConfigError("output_dir: must name a folder, got an empty string")
        if self.hub_token:  # kept out of every file the run writes (run_config.json, training_args.bin)
            os.environ["HF_TOKEN"] = self.hub_token
            self.hub_token = None
        if self.fp16:
            require_cuda("fp16")
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


SHARDED = ("FSDP", "DEEPSPEED")  # accelerate launch's engines that shard parameters (ACCELERATE_USE_<engine>)


def check_trainer_choices(args: TrainArguments) -> None:
    """Trainer settings that would otherwise fail only once the model is loaded: the loggers, the scheduler's
    keyword arguments and diagnostics under a sharding engine (the optimizer's package is the runner's to check:
    `check_packages`)."""
    from transformers.integrations import get_reporting_integration_callbacks

    try:
        get_reporting_integration_callbacks(args.report_to)
    except (ValueError, ImportError, RuntimeError) as err:
        raise ConfigError(f"report_to: {one_line(err)}") from None
    if not isinstance(args.lr_scheduler_kwargs, dict | None):
        raise ConfigError(f"lr_scheduler_kwargs: must be a JSON object, got {args.lr_scheduler_kwargs!r}")
    launched = [os.environ.get(f"ACCELERATE_USE_{kind}", "").lower() in ("1", "true") for kind in SHARDED]
    if args.lora_diagnostics_steps and (args.fsdp or args.deepspeed or any(launched)):
        raise ConfigError("lora_diagnostics_steps: not under FSDP or DeepSpeed, where each process holds a shard of A "
                          "and B; measure a single-process or data-parallel run")  # fmt: skip


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
