"""Packed LoRA training: K adapters on one frozen base, each on its own slice of the batch.

`packing.layers` holds the packed layers and the packing of a PEFT model; `packing.glue` trains K run_glue.py
configurations as one pack (`python -m packing <pack.json>`, or `python -m sweeps run … --pack K`). Packed
run_llm.py is not built yet."""

from packing.layers import PackedHead, PackedLoraLinear, pack_peft_models, pack_states, unpacked

__all__ = ["PackedHead", "PackedLoraLinear", "pack_peft_models", "pack_states", "unpacked"]
