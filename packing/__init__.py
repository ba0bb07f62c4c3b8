"""Packed LoRA training: K adapters on one frozen base, each on its own slice of the batch.

`packing.layers` holds the packed layers and the packing of a PEFT model; `packing.trainer` the Trainer and model
wrapper every pack shares; `packing.results` what each configuration leaves behind. `packing.glue` and `packing.llm`
train K run_glue.py or run_llm.py configurations as one pack (`python -m packing <pack.json>`, or
`python -m sweeps run … --pack K`)."""

from packing.layers import PackedHead, PackedLoraLinear, pack_peft_models, pack_states, unpacked

__all__ = ["PackedHead", "PackedLoraLinear", "pack_peft_models", "pack_states", "unpacked"]
