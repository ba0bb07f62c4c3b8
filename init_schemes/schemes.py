"""The init-scheme registry: plain functions that set the LoRA factors of an already-built PEFT model."""

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from peft.tuners.lora import LoraLayer

DISTRIBUTIONS = ("kaiming_uniform", "normal")
PEFT_SCHEMES = ("gaussian", "pissa", "olora", "orthogonal", "corda", "eva", "loftq", "mica")


@dataclass(frozen=True)
class InitSpec:
    """What an init scheme needs: its name, the random factor's distribution and scale, and the seed it draws from."""

    scheme: str = "A"
    distribution: str = "kaiming_uniform"
    scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in INIT_SCHEMES and not is_peft_scheme(self.scheme):
            known = ", ".join([*INIT_SCHEMES, *PEFT_SCHEMES, "pissa_niter_<k>"])
            raise ValueError(f"lora_init: unknown init scheme {self.scheme!r} (known: {known})")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"lora_init_distribution: must be one of {DISTRIBUTIONS}, got {self.distribution!r}")
        if not self.scale > 0:
            raise ValueError(f"lora_init_scale: must be > 0, got {self.scale}")


@dataclass(frozen=True)
class LoraFactors:
    """One adapter's pair of LoRA factors in one layer, with the fan-in each factor sees as a matrix acting on inputs.

    For a Linear (or Conv) LoRA layer the fan-in of A is the base layer's input size (times its kernel) and that of B
    is the rank r. For an Embedding LoRA layer, A is a lookup table hit by one-hot inputs, so its fan-in is 1.
    """

    name: str
    a: torch.Tensor
    b: torch.Tensor
    a_fan_in: int
    b_fan_in: int


def is_peft_scheme(scheme: str) -> bool:
    return scheme in PEFT_SCHEMES or scheme.startswith("pissa_niter_")


def peft_init_value(scheme: str) -> bool | str:
    """The value for `LoraConfig(init_lora_weights=...)`: PEFT's default for our schemes (we overwrite it after
    `get_peft_model`), or the scheme's own name for PEFT's schemes."""
    return scheme if is_peft_scheme(scheme) else True


def random_matrix_variance(fan_in: int, scale: float = 1.0) -> float:
    """Variance of each entry of the random factor: scale² / (3·fan_in).

    With scale 1 this is kaiming-uniform(a=√5), i.e. U(±1/√fan_in) — PEFT's and nn.Linear's default; the ``normal``
    distribution draws N(0, same variance), so switching distributions never changes the variance.
    """
    return scale**2 / (3 * fan_in)


def _draw(shape: torch.Size, fan_in: int, spec: InitSpec, generator: torch.Generator) -> torch.Tensor:
    std = math.sqrt(random_matrix_variance(fan_in, spec.scale))
    if spec.distribution == "kaiming_uniform":
        return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * (math.sqrt(3) * std)
    return torch.randn(shape, generator=generator, dtype=torch.float64) * std


def _fill(tensor: torch.Tensor, values: torch.Tensor | None) -> None:
    with torch.no_grad():
        if values is None:
            tensor.zero_()
        else:
            tensor.copy_(values.to(device=tensor.device, dtype=tensor.dtype))


def init_a(factors: LoraFactors, spec: InitSpec, generator: torch.Generator) -> None:
    """Init[A]: B = 0; A random with variance scale²/(3·fan_in(A)) — with the defaults, A ~ U(±1/√fan_in).
    BA = 0, so the model's outputs are unchanged."""
    _fill(factors.a, _draw(factors.a.shape, factors.a_fan_in, spec, generator))
    _fill(factors.b, None)


def init_b(factors: LoraFactors, spec: InitSpec, generator: torch.Generator) -> None:
    """Init[B]: A = 0; B random with variance scale²/(3·r) — with the defaults, B ~ U(±1/√r) on B's (out, r) weight.
    BA = 0, so the model's outputs are unchanged."""
    _fill(factors.a, None)
    _fill(factors.b, _draw(factors.b.shape, factors.b_fan_in, spec, generator))


INIT_SCHEMES: dict[str, Callable[[LoraFactors, InitSpec, torch.Generator], None]] = {"A": init_a, "B": init_b}


def lora_factors(model: torch.nn.Module) -> Iterator[LoraFactors]:
    """Every (adapter, layer) pair of LoRA factors in the model, in module order."""
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for adapter in module.lora_A:
            a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
            yield LoraFactors(f"{name}.{adapter}", a, b, a[0].numel(), b[0].numel())
        for adapter in module.lora_embedding_A:
            a, b = module.lora_embedding_A[adapter], module.lora_embedding_B[adapter]
            yield LoraFactors(f"{name}.{adapter}", a, b, 1, b[0].numel())


def apply_init(model: torch.nn.Module, spec: InitSpec) -> dict:
    """Apply `spec` to every LoRA layer of `model` and return the record to write beside the run's results.

    The random factor is drawn in float64 from a CPU generator seeded with `spec.seed`, so the adapter depends only on
    the seed and the model's LoRA layout, not on how many random numbers loading the model consumed.
    """
    layers = list(lora_factors(model))
    if not layers:
        raise ValueError("apply_init: the model has no LoRA layers (was it built with get_peft_model?)")
    record = {**asdict(spec), "applied_by": "peft" if is_peft_scheme(spec.scheme) else "init_schemes"}
    if is_peft_scheme(spec.scheme):
        return record
    init_fn = INIT_SCHEMES[spec.scheme]
    generator = torch.Generator().manual_seed(spec.seed)
    for factors in layers:
        init_fn(factors, spec, generator)
    random_factor = "A" if spec.scheme == "A" else "B"
    fan_ins = sorted({f.a_fan_in if random_factor == "A" else f.b_fan_in for f in layers})
    record.update(
        random_factor=random_factor,
        zero_factor="B" if random_factor == "A" else "A",
        variance_rule="scale**2 / (3 * fan_in)",
        variance_by_fan_in={str(n): random_matrix_variance(n, spec.scale) for n in fan_ins},
        num_lora_layers=len(layers),
    )
    return record
