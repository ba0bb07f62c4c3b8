"""The precision policy: no bf16 autocast over a base that already computes in 16 bits (`--autocast auto`)."""

import torch


def mixed_precision(requested: str, autocast: str, model) -> str:
    """The mixed precision the Trainer runs `model` in: the `requested` one, except that bf16 autocast is dropped
    under `autocast` auto when the LoRA base layers already compute in 16 bits. Then autocast would only re-cast
    the fp32 LoRA factors and leftovers every step, which made a QLoRA step at batch 1 about 10 % slower on an
    H100 (docs/benchmarks.md). Without it the model runs as the stock stack runs it: the LoRA branch in fp32, as
    PEFT keeps its factors, and so is whatever else is fp32 (a k-bit model's norms and lm_head)."""
    if requested != "bf16" or autocast == "on":
        return requested
    if autocast == "off" or base_computes_in_16_bits(model):
        return "no"
    return requested


def base_computes_in_16_bits(model) -> bool:
    """Whether every LoRA-wrapped base layer computes in bf16/fp16: 16-bit weights, or a bitsandbytes 4-bit layer
    with a 16-bit compute dtype. An 8-bit layer computes in its input's dtype (fp32 after the fp32 norms of a k-bit
    model), so it keeps autocast, as does anything unknown. False without LoRA layers."""
    bases = [m.base_layer for m in model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")]
    sixteen = (torch.bfloat16, torch.float16)

    def computes_in_16_bits(layer) -> bool:
        compute = getattr(layer, "compute_dtype", None)  # bitsandbytes 4-bit: its matmuls' dtype
        if compute is not None:
            return compute in sixteen
        weight = getattr(layer, "weight", None)
        return weight is not None and weight.dtype in sixteen

    return bool(bases) and all(computes_in_16_bits(layer) for layer in bases)
