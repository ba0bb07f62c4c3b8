"""LoRA+ per-matrix learning rates: the rule that puts each trainable parameter in one optimizer group
(`loraplus_param_groups`, checked by `assert_partition`) and the one factory that builds an optimizer over groups
(`optimizer_from_groups`; `create_loraplus_optimizer` applies the rule first). Usable in any training script:

    optimizer = create_loraplus_optimizer(peft_model, torch.optim.AdamW, lr=2e-4, loraplus_lr_ratio=16)
"""

from loraplus.groups import (
    DEFAULT_LR_EMBEDDING,
    assert_partition,
    create_loraplus_optimizer,
    describe_param_groups,
    loraplus_param_groups,
    optimizer_from_groups,
    param_group_summary,
    param_ndims,
    plain_name,
)

__all__ = [
    "DEFAULT_LR_EMBEDDING",
    "assert_partition",
    "create_loraplus_optimizer",
    "describe_param_groups",
    "loraplus_param_groups",
    "optimizer_from_groups",
    "param_group_summary",
    "param_ndims",
    "plain_name",
]
