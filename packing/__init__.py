"""Packed LoRA training: K adapters on one frozen base, each on its own slice of the batch (issue 6, in progress)."""

from packing.layers import PackedHead, PackedLoraLinear, pack_peft_models

__all__ = ["PackedHead", "PackedLoraLinear", "pack_peft_models"]
