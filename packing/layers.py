"""K LoRA adapters on one frozen model, computed together.

A packed batch holds K equal slices along its first dimension; slice k goes through adapter k (and head k) only:

    y_k = W x_k + b + s_k · B_k A_k x_k        for k = 0 … K−1, with s_k = alpha_k / r

The base weight W is applied once to the whole batch; the K low-rank updates are two batched matrix products. Each
adapter keeps its own parameters (A_k, B_k, head_k), so optimizer groups, learning rates and freezing are per
adapter, and a loss that is a sum of per-slice losses gives every adapter exactly its own gradient: nothing mixes.
"""

import torch
from peft.tuners.lora import LoraLayer
from peft.utils import ModulesToSaveWrapper
from torch import nn


class PackedLoraLinear(nn.Module):
    """A frozen `nn.Linear` with K LoRA adapters of one rank; input rows come as K equal slices."""

    def __init__(self, base: nn.Linear, factors: list[tuple[torch.Tensor, torch.Tensor]], scaling: list[float]):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.ParameterList([nn.Parameter(a.detach().clone()) for a, _ in factors])  # each r × in
        self.lora_B = nn.ParameterList([nn.Parameter(b.detach().clone()) for _, b in factors])  # each out × r
        self.register_buffer("scaling", torch.tensor(scaling, dtype=self.lora_A[0].dtype))

    @property
    def num_adapters(self) -> int:
        return len(self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        k = self.num_adapters
        slices = x.reshape(k, -1, x.shape[-1]).to(self.lora_A[0].dtype)
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
    """One model computing the K PEFT models' outputs at once (single default adapter each, no dropout, same
    frozen base). The first model's base is reused; the others only lend their adapters and heads."""
    inner = [m.get_base_model() for m in models]
    packed = inner[0]
    named = [dict(m.named_modules()) for m in inner]
    for name, module in list(named[0].items()):
        if isinstance(module, LoraLayer):
            if any(float(getattr(named[i][name].lora_dropout["default"], "p", 0.0)) for i in range(len(models))):
                raise ValueError(f"{name}: packed LoRA needs lora_dropout 0 (dropout would mix the slices' RNG)")
            factors = [
                (named[i][name].lora_A["default"].weight, named[i][name].lora_B["default"].weight)
                for i in range(len(models))
            ]
            scaling = [named[i][name].scaling["default"] for i in range(len(models))]
            _set_module(packed, name, PackedLoraLinear(module.base_layer, factors, scaling))
        elif isinstance(module, ModulesToSaveWrapper):
            heads = [named[i][name].modules_to_save["default"] for i in range(len(models))]
            _set_module(packed, name, PackedHead(heads))
    return packed


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
