"""Packed LoRA training, the mechanism: K adapters on one frozen base, each on its own slice of the batch.

`layers` holds the packed layers and the packing of a PEFT model; `model` the wrapper a task's packed model builds
on; `trainer` the Trainer every pack shares (per-adapter groups, clipping, divergence); `results` what each
configuration leaves behind; `probe` the memory probe behind `--pack auto`. `lorakit.runs.pack` runs a task's pack
(`python -m lorakit pack <pack.json>`, or `python -m lorakit.sweeps run … --pack K`)."""

from lorakit.packing.layers import PackedHead, PackedLoraLinear, pack_peft_models, pack_states, unpacked

__all__ = ["PackedHead", "PackedLoraLinear", "pack_peft_models", "pack_states", "unpacked"]
