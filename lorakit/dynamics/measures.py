"""The quantities of the paper's dynamics for one LoRA layer, from its factors and an input batch x (the layer's input,
tokens × fan-in), with s = α/r (the layer's scaling):

- Z_A = A·x, split into its initial part A_0·x and its update part (A_t − A_0)·x; Z_B = s·B·A·x;
- the factors' RMS and Frobenius norms, and how far they moved from their initial values;
- the feature update of one step, split (B_t A_t − B_{t−1} A_{t−1})·s·x = δ¹ + δ² + δ³:
  δ¹ = s·B_{t−1}·(Z_A^t − Z_A^{t−1}) (A's update seen through B), δ² = s·(B_t − B_{t−1})·Z_A^{t−1} (B's own update),
  δ³ = s·(B_t − B_{t−1})·(Z_A^t − Z_A^{t−1}).

RMS is the root mean square over every entry. Everything is computed in float64 (the products are small: tokens ×
fan-in by fan-in × r), under no_grad, from detached tensors: measuring draws no random number, keeps no graph and
touches no gradient.
"""

import torch


def rms(tensor: torch.Tensor) -> float:
    return tensor.pow(2).mean().sqrt().item() if tensor.numel() else 0.0


def frobenius(tensor: torch.Tensor) -> float:
    return tensor.norm().item()


def as_matrix(x: torch.Tensor) -> torch.Tensor:
    """An input batch as tokens × fan-in (every leading dimension flattened)."""
    return x.reshape(-1, x.shape[-1])


@torch.no_grad()
def layer_measures(x, scaling: float, initial: tuple, before: tuple, after: tuple) -> dict[str, float]:
    """Every quantity of the module docstring for one layer: `x` its input (…, fan-in), `initial`, `before` and
    `after` its (A, B) at the start of training, before this step's update and after it."""
    dtype = torch.float64
    x = as_matrix(x.detach()).to(dtype)
    (a0, b0), (a_prev, b_prev), (a, b) = ((p.detach().to(x.device, dtype), q.detach().to(x.device, dtype))
                                          for p, q in (initial, before, after))  # fmt: skip
    z_a, z_a_prev, z_a0 = x @ a.T, x @ a_prev.T, x @ a0.T
    dz_a, db = z_a - z_a_prev, b - b_prev
    return {
        "rms_z_a": rms(z_a),
        "rms_a0_x": rms(z_a0),
        "rms_update_x": rms(z_a - z_a0),
        "rms_z_b": rms(scaling * z_a @ b.T),
        "rms_delta1": rms(scaling * dz_a @ b_prev.T),
        "rms_delta2": rms(scaling * z_a_prev @ db.T),
        "rms_delta3": rms(scaling * dz_a @ db.T),
        "rms_a": rms(a),
        "rms_b": rms(b),
        "norm_a": frobenius(a),
        "norm_b": frobenius(b),
        "moved_a": frobenius(a - a0),
        "moved_b": frobenius(b - b0),
        "rms_moved_a": rms(a - a0),
        "rms_moved_b": rms(b - b0),
    }


MEASURED = ("rms_", "norm_", "moved_")  # the prefixes of what `layer_measures` returns
SUMMARY = ("rms_z_a", "rms_a0_x", "rms_update_x", "rms_z_b", "rms_delta1", "rms_delta2", "rms_delta3")


def summary(rows: list[dict]) -> dict[str, float]:
    """The mean over layers of each measured quantity of `rows` (one row per layer)."""
    keys = [k for k in rows[0] if k.startswith(MEASURED)] if rows else []
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}
