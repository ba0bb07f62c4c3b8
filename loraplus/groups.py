"""LoRA+ optimizer groups: one explicit rule decides each trainable parameter's learning rate and weight decay.

The rule (reference LoRA+, Hayou et al. 2024, so numbers stay comparable, with one difference below):

| group          | parameters                                        | lr                    | weight decay |
|----------------|---------------------------------------------------|-----------------------|--------------|
| A              | lora_A weights and every other trainable ≥2-D one | lr                    | weight_decay |
| B              | lora_B weights (and decayed 1-D parameters)       | lr · ratio            | weight_decay |
| B_no_decay     | biases and norm weights                           | lr · ratio            | 0            |
| embedding      | lora_embedding_A / lora_embedding_B               | loraplus_lr_embedding | weight_decay |

The one difference from the reference: a trainable normalization weight that is not an ``nn.LayerNorm`` (RMSNorm, as
in Llama) gets no weight decay here, as the Hugging Face Trainer's own rule has it (no decay for parameters named
``*norm*``); the reference exempts only ``nn.LayerNorm`` weights and biases, so with weight decay > 0 it decays an
RMSNorm weight, in group B. LoRA trains no norm weights unless they are in ``modules_to_save``.

With ``head_group=True`` the task head (PEFT's ``modules_to_save`` copies) leaves those groups for ``head`` and
``head_no_decay``, both at the base lr. Empty groups are dropped, and every trainable parameter lands in exactly one
group (`assert_partition`).
"""

from collections.abc import Mapping

import torch
from torch import nn

GROUP_A, GROUP_B, GROUP_B_NO_DECAY, GROUP_EMBEDDING = "A", "B", "B_no_decay", "embedding"
GROUP_HEAD, GROUP_HEAD_NO_DECAY = "head", "head_no_decay"
GROUP_ORDER = (GROUP_A, GROUP_EMBEDDING, GROUP_B, GROUP_B_NO_DECAY, GROUP_HEAD, GROUP_HEAD_NO_DECAY)
DEFAULT_LR_EMBEDDING = 1e-6  # as in the LoRA+ reference and PEFT
# What FSDP, activation checkpointing and torch.compile insert into module and parameter names when they wrap modules.
WRAPPER_PARTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod")


def plain_name(name: str) -> str:
    """A module's or parameter's name as the model was built, without the parts module wrappers insert."""
    return ".".join(part for part in name.split(".") if part not in WRAPPER_PARTS)


def param_ndims(model: nn.Module) -> dict[str, int]:
    """Each parameter's number of dimensions by plain name: recorded before FSDP wraps the model, after which (with
    use_orig_params) every parameter is a 1-D view of its shard and no longer shows which ones are vectors."""
    return {plain_name(name): param.ndim for name, param in model.named_parameters()}


def _owning_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Map each parameter's full name to the module that holds it directly."""
    owners = {}
    for module_name, module in model.named_modules():
        for param_name, _ in module.named_parameters(recurse=False):
            owners[f"{module_name}.{param_name}" if module_name else param_name] = module
    return owners


def is_decayed(name: str, owner: nn.Module) -> bool:
    """Weight decay applies to everything but biases and normalization weights."""
    lowered = name.lower()
    return not (name.endswith("bias") or isinstance(owner, nn.LayerNorm) or "norm" in lowered)


def param_group_name(name: str, ndim: int, owner: nn.Module, head_group: bool = False) -> str:
    """The group of one trainable parameter (its plain name, its number of dimensions as built) under the rule in this
    module's docstring."""
    decayed = is_decayed(name, owner)
    if "lora_embedding_" in name:
        return GROUP_EMBEDDING
    if head_group and ".modules_to_save." in name:
        return GROUP_HEAD if decayed else GROUP_HEAD_NO_DECAY
    if "lora_B" in name or ndim == 1:
        return GROUP_B if decayed else GROUP_B_NO_DECAY
    return GROUP_A


def group_hyperparameters(
    group: str, *, lr: float, loraplus_lr_ratio: float, loraplus_lr_embedding: float, weight_decay: float
) -> dict[str, float]:
    learning_rates = {
        GROUP_A: lr,
        GROUP_EMBEDDING: loraplus_lr_embedding,
        GROUP_B: lr * loraplus_lr_ratio,
        GROUP_B_NO_DECAY: lr * loraplus_lr_ratio,
        GROUP_HEAD: lr,
        GROUP_HEAD_NO_DECAY: lr,
    }
    no_decay = group in (GROUP_B_NO_DECAY, GROUP_HEAD_NO_DECAY)
    return {"lr": learning_rates[group], "weight_decay": 0.0 if no_decay else weight_decay}


def loraplus_param_groups(
    model: nn.Module,
    *,
    lr: float,
    loraplus_lr_ratio: float,
    loraplus_lr_embedding: float = DEFAULT_LR_EMBEDDING,
    weight_decay: float = 0.0,
    head_group: bool = False,
    ndims: Mapping[str, int] | None = None,
) -> list[dict]:
    """Optimizer parameter groups for `model`, each a dict with ``name``, ``params``, ``param_names`` (plain names),
    ``lr`` and ``weight_decay``, in a fixed order with empty groups left out. A model FSDP has wrapped needs `ndims`,
    its `param_ndims` from before the wrapping; without it, it is refused (every parameter would look 1-D)."""
    owners = _owning_modules(model)
    names: dict[str, list[str]] = {group: [] for group in GROUP_ORDER}
    params: dict[str, list[torch.Tensor]] = {group: [] for group in GROUP_ORDER}
    for name, param in model.named_parameters():
        if param.requires_grad:
            plain = plain_name(name)
            group = param_group_name(plain, _ndim_as_built(name, plain, param, ndims), owners[name], head_group)
            names[group].append(plain)
            params[group].append(param)
    hyper = dict(lr=lr, loraplus_lr_ratio=loraplus_lr_ratio, loraplus_lr_embedding=loraplus_lr_embedding)
    groups = [
        {
            "name": g,
            "params": params[g],
            "param_names": names[g],
            **group_hyperparameters(g, **hyper, weight_decay=weight_decay),
        }
        for g in GROUP_ORDER
        if params[g]
    ]
    assert_partition(model, groups)
    return groups


def _ndim_as_built(name: str, plain: str, param: torch.Tensor, ndims: Mapping[str, int] | None) -> int:
    if name.endswith("_flat_param"):
        raise ValueError(f"{name}: FSDP without use_orig_params flattens several parameters into one, whose group "
                         "its name and shape no longer tell; set fsdp_use_orig_params: true")  # fmt: skip
    if ndims is None:
        if "_fsdp_wrapped_module." in name:
            raise ValueError(f"{name}: FSDP has flattened this model's parameters; pass ndims=param_ndims(model), "
                             "recorded before it was wrapped")  # fmt: skip
        return param.ndim
    if plain not in ndims:
        raise ValueError(f"{name}: not in the shapes recorded before FSDP wrapped the model (added since?)")
    return ndims[plain]


def assert_partition(model: nn.Module, groups: list[dict]) -> None:
    """Raise AssertionError unless every trainable parameter of `model` is in exactly one group and no group holds
    anything else."""
    trainable = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    seen: dict[int, int] = {}
    for group in groups:
        for param in group["params"]:
            seen[id(param)] = seen.get(id(param), 0) + 1
    missing = sorted(n for i, n in trainable.items() if i not in seen)
    repeated = sorted(trainable.get(i, "<untracked>") for i, count in seen.items() if count > 1)
    foreign = sum(1 for i in seen if i not in trainable)
    if missing or repeated or foreign:
        raise AssertionError(
            f"optimizer groups do not partition the trainable parameters: missing {missing}, "
            f"in several groups {repeated}, {foreign} frozen or foreign tensor(s)"
        )


def param_group_summary(groups: list[dict]) -> list[dict]:
    """The groups without their tensors, for the run's resolved config."""
    keys = ("name", "lr", "weight_decay", "param_names")
    return [{**{k: g.get(k) for k in keys}, "num_params": sum(p.numel() for p in g["params"])} for g in groups]


def describe_param_groups(groups: list[dict], max_names: int = 4) -> str:
    """A table of the groups for the start-up log: group → lr, weight decay, tensors, parameters, names."""
    lines = [f"{'group':<14}{'lr':>11}{'wd':>8}{'tensors':>9}{'params':>12}  names"]
    for group in groups:
        names = group.get("param_names") or []
        shown = ", ".join(names[:max_names]) + (f", … (+{len(names) - max_names})" if len(names) > max_names else "")
        count = sum(p.numel() for p in group["params"])
        line = f"{group.get('name', '?'):<14}{group['lr']:>11.3g}{group['weight_decay']:>8.3g}"
        lines.append(f"{line}{len(group['params']):>9}{count:>12,}  {shown}")
    return "\n".join(lines)


def create_loraplus_optimizer(
    model: nn.Module,
    optimizer_cls: type[torch.optim.Optimizer],
    *,
    lr: float,
    loraplus_lr_ratio: float,
    loraplus_lr_embedding: float = DEFAULT_LR_EMBEDDING,
    weight_decay: float = 0.0,
    loraplus_head_group: bool = False,
    **kwargs,
) -> torch.optim.Optimizer:
    """A LoRA+ optimizer, with the call shape of `peft.optimizers.create_loraplus_optimizer`.

    Unlike PEFT 0.21's helper, ``weight_decay`` reaches the decayed groups (PEFT's ``loraplus_weight_decay`` is
    accepted as its alias) and empty groups are dropped. Remaining kwargs (betas, eps, ...) go to `optimizer_cls`.
    """
    weight_decay = kwargs.pop("loraplus_weight_decay", weight_decay)
    groups = loraplus_param_groups(
        model,
        lr=lr,
        loraplus_lr_ratio=loraplus_lr_ratio,
        loraplus_lr_embedding=loraplus_lr_embedding,
        weight_decay=weight_decay,
        head_group=loraplus_head_group,
    )
    return optimizer_from_groups(optimizer_cls, groups, lr=lr, weight_decay=weight_decay, **kwargs)


def optimizer_from_groups(
    optimizer_cls: type[torch.optim.Optimizer], groups: list[dict], *, model: nn.Module | None = None, **kwargs
):
    """The one place an optimizer is built over parameter groups (each with its own lr and weight decay): here, in
    the toolkit's Trainer, and per adapter in its packs. Given `model`, the groups must partition its trainable
    parameters (`assert_partition`). Keys a torch optimizer does not take (``name``, ``param_names``) stay in the
    groups for the logs; `kwargs` (lr, betas, eps, …) are the optimizer's defaults."""
    if model is not None:
        assert_partition(model, groups)
    return optimizer_cls(groups, **kwargs)
