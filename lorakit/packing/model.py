"""The model a pack trains: a packed PEFT model (`lorakit.packing.layers`) run on K copies of each batch, slice k
through adapter k. A task's subclass computes the K losses (`Task.packed_model`)."""

import torch
from torch import nn

from lorakit.packing.layers import PackedHead, PackedLoraLinear


class PackedModel(nn.Module):
    """A packed model (see `lorakit.packing.layers.pack_states`) run on K copies of each batch, slice k through adapter
    k. Subclasses compute the K losses; the training loss is the sum of the live adapters' losses. `step_losses` sums
    each adapter's micro-batch losses since the last optimizer step, for the divergence check."""

    MIRRORED = ("hf_device_map", "is_loaded_in_4bit", "is_loaded_in_8bit", "quantization_method")  # placement

    def __init__(self, packed: nn.Module, k: int, threshold: float):
        super().__init__()
        self.packed, self.k, self.threshold = packed, k, threshold
        self.register_buffer("diverged_at", torch.full((k,), -1, dtype=torch.long))  # kept in checkpoints
        self.live = list(range(k))  # a host-side mirror of diverged_at < 0 (no device sync per step)
        self.step_losses: torch.Tensor | None = None
        for name in self.MIRRORED:  # so that neither the Trainer nor accelerate moves a k-bit base
            if hasattr(packed, name):
                setattr(self, name, getattr(packed, name))

    def repeated(self, inputs: dict) -> dict:
        """The batch's tensors K times along the batch dimension."""
        return {n: v.repeat(self.k, *[1] * (v.dim() - 1)) for n, v in inputs.items() if v is not None}

    def training_loss(self, losses: torch.Tensor) -> torch.Tensor:
        if self.training:
            seen = losses.detach()
            self.step_losses = seen if self.step_losses is None else self.step_losses + seen
        return losses[self.live].sum()

    def gradient_checkpointing_enable(self, **kwargs) -> None:
        self.packed.gradient_checkpointing_enable(**kwargs)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint of the pack needs: the adapters, the heads and who diverged (the base is frozen)."""
        kept = {"diverged_at": self.diverged_at}
        for name, module in self.packed.named_modules():
            if isinstance(module, (PackedLoraLinear, PackedHead)):
                for key, value in module.state_dict().items():
                    if not key.startswith("base_layer."):
                        kept[f"packed.{name}.{key}"] = value
        return kept
