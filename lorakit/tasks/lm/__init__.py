"""Causal language modelling: plain text in blocks, GSM8K, instructions scored on MMLU (the lm task)."""
