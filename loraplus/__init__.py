"""LoRA+ per-matrix learning rates: parameter groups, an optimizer factory and a Trainer that uses them."""

from loraplus.groups import (
    assert_partition,
    create_loraplus_optimizer,
    describe_param_groups,
    loraplus_param_groups,
    param_group_summary,
)
from loraplus.trainer import LoraPlusTrainer, LoraPlusTrainingArguments

__all__ = [
    "LoraPlusTrainer",
    "LoraPlusTrainingArguments",
    "assert_partition",
    "create_loraplus_optimizer",
    "describe_param_groups",
    "loraplus_param_groups",
    "param_group_summary",
]
