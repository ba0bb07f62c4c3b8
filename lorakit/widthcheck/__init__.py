"""The width (coordinate) check of LoRA's dynamics on transformer architectures (`python -m lorakit.widthcheck`)."""
