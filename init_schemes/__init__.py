"""LoRA initialization schemes, applied to a model that stock PEFT (`get_peft_model`) has built.

Both schemes of Hayou, Ghosh & Yu (2024) start at ΔW = BA = 0, so the model's outputs are unchanged at step 0, but
they put the randomness in different factors:

- ``A`` — Init[A]: A random, B = 0 (PEFT's default). Stable up to lr ~ n^-1/2 in width n.
- ``B`` — Init[B]: A = 0, B random. Stable only up to lr ~ n^-1.

Other names (``gaussian``, ``pissa``, ``olora``, ``orthogonal``, ...) are PEFT's own schemes: they are passed to
`LoraConfig(init_lora_weights=...)`; PEFT applies them while building the model, and `apply_init` only records them.
"""

from init_schemes.schemes import (
    INIT_SCHEMES,
    PEFT_SCHEMES,
    InitSpec,
    apply_init,
    init_a,
    init_b,
    peft_init_value,
    random_matrix_variance,
)

__all__ = [
    "INIT_SCHEMES",
    "PEFT_SCHEMES",
    "InitSpec",
    "apply_init",
    "init_a",
    "init_b",
    "peft_init_value",
    "random_matrix_variance",
]
