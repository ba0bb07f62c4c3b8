"""K LoRA adapters on one frozen model, computed together.

A packed batch holds K equal slices along its first dimension; slice k goes through adapter k (and head k) only:

    y_k = W x_k + b + s_k · B_k A_k x_k        for k = 0 … K−1, with s_k = alpha_k / r

The base weight W is applied once to the whole batch; the K low-rank updates are two batched matrix products. Each
adapter keeps its own parameters (A_k, B_k, head_k), so optimizer groups, learning rates and freezing are per
adapter, and a loss that is a sum of per-slice losses gives every adapter exactly its own gradient: nothing mixes.
"""

import contextlib
import copy

import torch
from peft.tuners.lora import LoraLayer
from peft.utils import ModulesToSaveWrapper
from torch import nn


class PackedLoraLinear(nn.Module):
    """A frozen `nn.Linear` with K LoRA adapters of one rank; input rows come as K equal slices."""

    def __init__(
        self,
        base: nn.Linear,
        factors: list[tuple[torch.Tensor, torch.Tensor]],
        scaling: list[float],
        dropout: float = 0.0,
        trainable: tuple[bool, bool] = (True, True),
    ):
        super().__init__()
        self.base_layer = base.requires_grad_(False)  # PEFT's name, so precision checks see the base
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()  # every row its own mask
        train_a, train_b = trainable
        self.lora_A = nn.ParameterList([nn.Parameter(a.detach().clone(), train_a) for a, _ in factors])  # r × in
        self.lora_B = nn.ParameterList([nn.Parameter(b.detach().clone(), train_b) for _, b in factors])  # out × r
        like = self.lora_A[0]  # a k-bit base is never moved as a whole: the buffer starts beside the adapters
        self.register_buffer("scaling", torch.tensor(scaling, dtype=like.dtype, device=like.device), persistent=False)

    @property
    def num_adapters(self) -> int:
        return len(self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        k = self.num_adapters
        slices = self.dropout(x).reshape(k, -1, x.shape[-1]).to(self.lora_A[0].dtype)
        a, b = torch.stack(list(self.lora_A)), torch.stack(list(self.lora_B))
        delta = torch.bmm(torch.bmm(slices, a.transpose(1, 2)), b.transpose(1, 2)) * self.scaling.view(k, 1, 1)
        return out + delta.reshape(out.shape).to(out.dtype)


class PackedHead(nn.Module):
    """K copies of a trainable module (a task head); slice k of the input goes through copy k."""

    def __init__(self, heads: list[nn.Module]):
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        slices = x.chunk(len(self.heads), dim=0)
        return torch.cat([head(s, *args, **kwargs) for head, s in zip(self.heads, slices, strict=True)], dim=0)


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def pack_peft_models(models: list) -> nn.Module:
    """One model computing the K PEFT models' outputs at once (single default adapter each, same frozen base and
    LoRA dropout). The first model's base is reused; the others only lend their adapters and heads."""
    states = [{n: p.detach() for n, p in m.named_parameters() if p.requires_grad} for m in models]
    return pack_states(models[0], states)


def pack_states(model, states: list[dict[str, torch.Tensor]]) -> nn.Module:
    """`model` (a PEFT model with one default adapter) packed with K adapters whose trainable values are `states`
    (PEFT parameter name → tensor); frozen parts of the adapters and heads (e.g. a frozen head dense layer, or A under
    freeze_lora_A) keep the model's own values and stay frozen. Packs in place: returns the base model, its LoRA
    layers and heads replaced (`unpacked` puts them back for a while)."""
    packed = model.get_base_model()
    prefix = next(n for n, m in model.named_modules() if m is packed)
    model.packing_originals = {}

    def value(state: dict, name: str, own: torch.Tensor) -> torch.Tensor:
        return state.get(name, own.detach())

    for name, module in list(packed.named_modules()):
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(module, LoraLayer):
            a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            factors = [
                (value(s, f"{full}.lora_A.default.weight", a), value(s, f"{full}.lora_B.default.weight", b))
                for s in states
            ]
            scaling = [module.scaling["default"]] * len(states)
            dropout = float(getattr(module.lora_dropout["default"], "p", 0.0))
            trainable = (a.requires_grad, b.requires_grad)
            model.packing_originals[name] = module
            _set_module(packed, name, PackedLoraLinear(module.base_layer, factors, scaling, dropout, trainable))
        elif isinstance(module, ModulesToSaveWrapper):
            heads = []
            for s in states:
                head = copy.deepcopy(module.modules_to_save["default"])
                with torch.no_grad():
                    for n, p in head.named_parameters():
                        p.copy_(value(s, f"{full}.modules_to_save.default.{n}", p))
                heads.append(head)
            model.packing_originals[name] = module
            _set_module(packed, name, PackedHead(heads))
    return packed


def peft_named_parameters(model, index: int) -> dict[str, nn.Parameter]:
    """Adapter `index`'s packed parameters under the names the unpacked PEFT model gives them."""
    packed = model.get_base_model()
    prefix = next(n for n, m in model.named_modules() if m is packed)
    found = {}
    for name, module in packed.named_modules():
        full = f"{prefix}.{name}" if prefix else name
        if isinstance(module, PackedLoraLinear):
            found[f"{full}.lora_A.default.weight"] = module.lora_A[index]
            found[f"{full}.lora_B.default.weight"] = module.lora_B[index]
        elif isinstance(module, PackedHead):
            for n, p in module.heads[index].named_parameters():
                found[f"{full}.modules_to_save.default.{n}"] = p
    return found


@contextlib.contextmanager
def unpacked(model, index: int):
    """`model` (packed by `pack_states`) as the plain PEFT model of adapter `index`, for the duration: its own LoRA
    layers and head back in the tree, holding adapter `index`'s current values (e.g. to save a standard adapter)."""
    packed = model.get_base_model()
    swapped = {name: packed.get_submodule(name) for name in model.packing_originals}
    with torch.no_grad():
        for name, original in model.packing_originals.items():
            mine = swapped[name]
            if isinstance(mine, PackedLoraLinear):
                original.lora_A["default"].weight.copy_(mine.lora_A[index])
                original.lora_B["default"].weight.copy_(mine.lora_B[index])
            else:
                original.modules_to_save["default"].load_state_dict(mine.heads[index].state_dict())
            _set_module(packed, name, original)
    try:
        yield model
    finally:
        for name, module in swapped.items():
            _set_module(packed, name, module)


def adapter_parameters(packed: nn.Module, index: int) -> list[tuple[str, nn.Parameter]]:
    """Adapter `index`'s own parameters (its A and B factors and its head), by name."""
    found = []
    for name, module in packed.named_modules():
        if isinstance(module, PackedLoraLinear):
            found += [
                (f"{name}.lora_A.{index}", module.lora_A[index]),
                (f"{name}.lora_B.{index}", module.lora_B[index]),
            ]
        elif isinstance(module, PackedHead):
            found += [(f"{name}.heads.{index}.{n}", p) for n, p in module.heads[index].named_parameters()]
    return found
