"""A Trainer with LoRA+ optimizer groups when `loraplus_lr_ratio` is set, and no bf16 autocast over a base that
already computes in 16 bits (see `LoraPlusTrainingArguments.mixed_precision_for`)."""

import contextlib
import logging
import types
from dataclasses import dataclass, field

import torch
from accelerate.utils import DistributedType
from transformers import Trainer, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler

from loraplus.groups import DEFAULT_LR_EMBEDDING, describe_param_groups, loraplus_param_groups, param_group_summary

logger = logging.getLogger(__name__)


@dataclass
class LoraPlusTrainingArguments(TrainingArguments):
    loraplus_lr_ratio: float | None = field(
        default=None,
        metadata={"help": "LoRA+ ratio lr_B / lr_A. Unset: the Trainer's default optimizer (one lr for all)."},
    )
    loraplus_lr_embedding: float = field(
        default=DEFAULT_LR_EMBEDDING, metadata={"help": "LoRA+ learning rate of embedding LoRA factors."}
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
            raise ValueError(f"autocast: must be auto, on or off, got {self.autocast!r}")
        if self.loraplus_lr_ratio is not None and not self.loraplus_lr_ratio > 0:
            raise ValueError(f"loraplus_lr_ratio: must be > 0, got {self.loraplus_lr_ratio}")
        if not self.loraplus_lr_embedding > 0:
            raise ValueError(f"loraplus_lr_embedding: must be > 0, got {self.loraplus_lr_embedding}")
        super().__post_init__()

    def loraplus_groups(self, model) -> list[dict]:
        """The LoRA+ parameter groups these arguments give `model` (requires `loraplus_lr_ratio`)."""
        return loraplus_param_groups(
            model,
            lr=self.learning_rate,
            loraplus_lr_ratio=self.loraplus_lr_ratio,
            loraplus_lr_embedding=self.loraplus_lr_embedding,
            weight_decay=self.weight_decay,
            head_group=self.loraplus_head_group,
        )

    def mixed_precision_for(self, model) -> str:
        """The mixed precision the Trainer runs `model` in: the requested one, except that bf16 autocast is dropped
        under `autocast` auto when the LoRA base layers already compute in 16 bits. Then autocast would only re-cast
        the fp32 LoRA factors and leftovers every step, which made a QLoRA step at batch 1 about 10 % slower on an
        H100 (docs/benchmarks.md). Without it the model runs as the stock stack runs it: the LoRA branch in fp32, as
        PEFT keeps its factors, and so is whatever else is fp32 (a k-bit model's norms and lm_head)."""
        requested = self.mixed_precision
        if requested != "bf16" or self.autocast == "on":
            return requested
        if self.autocast == "off" or base_computes_in_16_bits(model):
            return "no"
        return requested

    def training_record(self, model) -> dict:
        """The optimizer groups and the mixed precision, for the run's resolved config."""
        precision = {"mixed_precision": self.mixed_precision_for(model)}
        if self.loraplus_lr_ratio is None:
            return {"optimizer_groups": "Trainer default: one learning rate for all trainable parameters", **precision}
        return {"optimizer_groups": param_group_summary(self.loraplus_groups(model)), **precision}


def base_computes_in_16_bits(model) -> bool:
    """Whether every LoRA-wrapped base layer computes in bf16/fp16: 16-bit weights, or a bitsandbytes 4-bit layer
    with a 16-bit compute dtype. An 8-bit layer computes in its input's dtype (fp32 after the fp32 norms of a k-bit
    model), so it keeps autocast, as does anything unknown. False without LoRA layers."""
    bases = [m.base_layer for m in model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")]
    sixteen = (torch.bfloat16, torch.float16)

    def computes_in_16_bits(layer) -> bool:
        compute = getattr(layer, "compute_dtype", None)  # bitsandbytes 4-bit: its matmuls' dtype
        if compute is not None:
            return compute in sixteen
        weight = getattr(layer, "weight", None)
        return weight is not None and weight.dtype in sixteen

    return bool(bases) and all(computes_in_16_bits(layer) for layer in bases)


class LoraPlusTrainer(Trainer):
    """`transformers.Trainer` with LoRA+ parameter groups (see `loraplus.groups`) and the mixed precision of
    `LoraPlusTrainingArguments.mixed_precision_for`. The training loop is the Trainer's, minus per-step walks over
    every module and parameter that a LoRA model (thousands of modules, a few hundred trainable tensors) pays for in
    Python: on a launch-bound GPU step they cost as much as the kernels (docs/benchmarks.md)."""

    _flops_per_token: int | None = None

    def train(self, *args, **kwargs):
        with cheap_mode_switches(self.model):
            return super().train(*args, **kwargs)

    def floating_point_ops(self, inputs: dict) -> int:
        """The Trainer's estimate (6 × tokens × non-embedding parameters), with the parameter count taken once."""
        if self._flops_per_token is None:
            counts = hasattr(self.model, "num_parameters")
            self._flops_per_token = 6 * self.model.num_parameters(exclude_embeddings=True) if counts else 0
        main_input = getattr(self.model, "main_input_name", "input_ids")
        return self._flops_per_token * inputs[main_input].numel() if main_input in inputs else 0

    def _get_train_sampler(self, train_dataset=None):
        """The Trainer's sampler, except that group_by_length shuffles from (seed, epoch), not from the global random
        state: a run resumed in a later epoch then sees the order its uninterrupted run saw."""
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return SeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths, seed=seed)
        return sampler

    def _clip_grad_norm(self, model):
        plain = self.accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_GPU)
        if not plain or getattr(self.args, "parallelism_config", None) is not None:  # sharded gradients: the stock way
            return super()._clip_grad_norm(model)
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        return self.accelerator.clip_grad_norm_(trainable, self.args.max_grad_norm)

    def _build_accelerator_args(self, **kwargs) -> dict:
        accelerator_args = super()._build_accelerator_args(**kwargs)
        engine = self.args.deepspeed or self.args.fsdp  # they set their own precision from --bf16; leave them be
        if isinstance(self.args, LoraPlusTrainingArguments) and self.model is not None and not engine:
            accelerator_args["mixed_precision"] = self.args.mixed_precision_for(self.model)
        return accelerator_args

    def create_optimizer(self, model=None):
        ratio = getattr(self.args, "loraplus_lr_ratio", None)
        if ratio is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("lr", "weight_decay")}
        groups = self.args.loraplus_groups(opt_model)
        self.optimizer = optimizer_cls(
            groups, lr=self.args.learning_rate, weight_decay=self.args.weight_decay, **kwargs
        )
        logger.info(
            "LoRA+ optimizer groups (ratio %g):\n%s", ratio, describe_param_groups(self.optimizer.param_groups)
        )
        return self.optimizer


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped sampler whose shuffle for epoch e comes from a generator seeded with seed + e
    (the Trainer calls `set_epoch` before each epoch)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


@contextlib.contextmanager
def cheap_mode_switches(model: torch.nn.Module):
    """While training, `model.train()` and `model.zero_grad()` skip their recursive walks over every module when
    there is nothing to do: train(mode) only checks each module's flag when every module is in that mode already (the
    Trainer asks for it every step), and zero_grad() clears the parameters from a list made once. Both give exactly
    the results of the full walks. The overrides are methods bound to `model` (a deep copy binds them to the copy),
    and whatever the instance had before is put back afterwards. Modules added during training are not seen."""
    saved = {name: vars(model)[name] for name in ("train", "zero_grad") if name in vars(model)}
    model._cheap_modules, model._cheap_params = list(model.modules()), list(model.parameters())
    model.train, model.zero_grad = types.MethodType(_train, model), types.MethodType(_zero_grad, model)
    try:
        yield
    finally:
        for name in ("train", "zero_grad", "_cheap_modules", "_cheap_params"):
            vars(model).pop(name, None)
        vars(model).update(saved)


def _train(self, mode: bool = True):
    if all(m.training == mode for m in self._cheap_modules):
        return self
    return type(self).train(self, mode)


def _zero_grad(self, set_to_none: bool = True) -> None:
    if not set_to_none:
        return type(self).zero_grad(self, set_to_none)
    for param in self._cheap_params:
        param.grad = None
