"""Models: their arguments, their loading (embedded defaults, quantization), LoRA on them."""
