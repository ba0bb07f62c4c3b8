"""A Trainer whose only change is the optimizer: LoRA+ groups when `loraplus_lr_ratio` is set."""

import logging
from dataclasses import dataclass, field

from transformers import Trainer, TrainingArguments

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

    def __post_init__(self) -> None:
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

    def optimizer_groups_record(self, model) -> dict:
        """The optimizer groups for the run's resolved config."""
        if self.loraplus_lr_ratio is None:
            return {"optimizer_groups": "Trainer default: one learning rate for all trainable parameters"}
        return {"optimizer_groups": param_group_summary(self.loraplus_groups(model))}


class LoraPlusTrainer(Trainer):
    """`transformers.Trainer` with LoRA+ parameter groups (see `loraplus.groups`); nothing else is changed."""

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
