"""The LoRA layers of a model as the diagnostics see them: each adapter's view of each layer (its factors, scaling and
input), for a PEFT model (one adapter) and for a pack (`lorakit.packing.layers.PackedLoraLinear`, K adapters whose
inputs are the K slices of the batch), named as a single run names them.

`InputCapture` keeps the inputs a step's forward passes give each layer: detached copies, at most `tokens` rows per
adapter (the step's micro-batches in order), taken by forward pre-hooks that change nothing the layer computes.
"""

from dataclasses import dataclass

import torch
from peft.tuners.lora import LoraLayer
from torch import nn

from lorakit.packing.layers import PackedLoraLinear

WRAPPER_PREFIXES = ("base_model.model.", "packed.")  # a PEFT model's and a PackedModel's way to the base model


@dataclass
class LayerView:
    """Adapter `index` (None: a PEFT layer's active adapter) of one LoRA layer."""

    name: str  # the layer's module path in the base model (bert.encoder.layer.0.attention.self.query)
    module: nn.Module
    index: int | None = None
    adapter: str = "default"

    @property
    def target(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def module_type(self) -> str:
        """The frozen layer's class (Linear, Linear4bit, …)."""
        return type(self.module.base_layer).__name__

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Detached copies of (A, B): A is r × fan-in, B fan-out × r."""
        if self.index is None:
            pair = self.module.lora_A[self.adapter].weight, self.module.lora_B[self.adapter].weight
        else:
            pair = self.module.lora_A[self.index], self.module.lora_B[self.index]
        return tuple(p.detach().clone() for p in pair)

    @property
    def scaling(self) -> float:
        if self.index is None:
            return float(self.module.scaling[self.adapter])
        return float(self.module.scaling[self.index])

    def own_rows(self, x: torch.Tensor) -> torch.Tensor:
        """This adapter's rows of a layer input, as tokens × fan-in (a pack's input holds K equal slices)."""
        if self.index is None:
            return x.reshape(-1, x.shape[-1])
        return x.reshape(self.module.num_adapters, -1, x.shape[-1])[self.index]


def relative_name(name: str) -> str:
    for prefix in WRAPPER_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def lora_layers(model: nn.Module) -> dict[int | None, list[LayerView]]:
    """Every LoRA layer of `model`, by adapter: {None: [...]} for a PEFT model, {0: [...], …, K−1: [...]} for a pack.
    Only linear LoRA layers count (an embedding's LoRA has no input features to measure)."""
    found: dict[int | None, list[LayerView]] = {}
    for name, module in model.named_modules():
        if isinstance(module, PackedLoraLinear):
            for index in range(module.num_adapters):
                found.setdefault(index, []).append(LayerView(relative_name(name), module, index))
        elif isinstance(module, LoraLayer):
            adapter = next((a for a in module.active_adapters if a in module.lora_A), None)
            if adapter is not None and isinstance(module.lora_A[adapter], nn.Linear):
                found.setdefault(None, []).append(LayerView(relative_name(name), module, None, adapter))
    return found


def in_backward() -> bool:
    """Whether autograd is running a backward pass (a checkpointed block recomputing its forward)."""
    current = getattr(torch._C, "_current_graph_task_id", None)
    return current is not None and current() != -1


class InputCapture:
    """While open, each LoRA layer's inputs, per adapter view: `rows[(index, name)]` (tokens × fan-in)."""

    def __init__(self, layers: dict[int | None, list[LayerView]], tokens: int):
        self.tokens, self.rows, self.handles = tokens, {}, []
        self.by_module: dict[int, list[LayerView]] = {}
        for views in layers.values():
            for view in views:
                self.by_module.setdefault(id(view.module), []).append(view)
        self.modules = {id(v.module): v.module for views in layers.values() for v in views}

    def open(self) -> None:
        self.rows = {}
        for key, module in self.modules.items():
            self.handles.append(module.register_forward_pre_hook(self._hook(key), with_kwargs=True))

    def _hook(self, key: int):
        def keep(module, positional, kwargs):
            x = positional[0] if positional else kwargs.get("x")
            if x is None or in_backward():  # gradient checkpointing's second forward: the same inputs again
                return None
            with torch.no_grad():
                for view in self.by_module[key]:
                    kept = self.rows.get((view.index, view.name))
                    room = self.tokens - (0 if kept is None else kept.shape[0])
                    if room > 0:
                        new = view.own_rows(x.detach())[:room].clone()
                        self.rows[(view.index, view.name)] = new if kept is None else torch.cat([kept, new])
            return None

        return keep

    def close(self) -> dict[tuple, torch.Tensor]:
        for handle in self.handles:
            handle.remove()
        self.handles, rows, self.rows = [], self.rows, {}
        return rows
