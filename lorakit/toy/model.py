"""The paper's toy model (§3): one hidden layer of width n carrying one LoRA module, and its teacher.

    Y_in = W_in·x,   Y_h = Y_in + (α/r)·B·A·φ(Y_in),   out = W_out·φ(Y_h),   φ = ReLU

W_in (n×d) and W_out (1×n) are frozen at their standard initialization, N(0, 1/d) and N(0, 1/n), so Y_in and the
output are of order one at every width. The teacher is the same network with a planted rank-r update B*·A*
(A* ~ N(0, 1/n), B* ~ N(0, 1)); the student starts at ΔW = B·A = 0 and trains only A and B.
"""

from dataclasses import dataclass

import torch

INITS = ("A", "B")


@dataclass(frozen=True)
class ToyConfig:
    """Everything about one toy experiment except the widths, learning rates, seeds and inits that it sweeps."""

    d: int = 5  # input dimension
    r: int = 4  # LoRA rank
    alpha: float = 4.0  # LoRA alpha; the update is scaled by alpha / r
    n_train: int = 256  # training points (the paper: 1000; fewer keeps the default sweep under 10 min on 2 cores)
    n_test: int = 100  # test points (the paper: 100)
    steps: int = 200  # full-batch Adam steps
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    init_scale_a: float = 1.0  # Init[A]: A ~ N(0, scale²/n), B = 0
    init_scale_b: float = 1.0  # Init[B]: A = 0, B ~ N(0, scale²/r)
    loraplus_ratio: float = 1.0  # lr_B = ratio · lr_A
    divergence_factor: float = 100.0  # a student is unstable once its train loss exceeds this × its initial loss
    record_every: int = 5  # steps between points of the recorded training curves
    compute_dtype: str = "float32"  # dtype of the n×N activations; parameters and Adam moments are float64

    def __post_init__(self) -> None:
        for name in ("d", "r", "n_train", "n_test", "steps", "record_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)}")
        for name in ("alpha", "init_scale_a", "init_scale_b", "loraplus_ratio", "divergence_factor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.compute_dtype not in ("float32", "float64"):
            raise ValueError(f"compute_dtype: must be float32 or float64, got {self.compute_dtype!r}")

    @property
    def scaling(self) -> float:
        return self.alpha / self.r


@dataclass
class Problem:
    """One teacher and its data at one width: everything a student needs that does not change during training."""

    width: int
    w_in: torch.Tensor  # (n, d)
    w_out: torch.Tensor  # (n,)
    x_train: torch.Tensor  # (N, d)
    y_train: torch.Tensor  # (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor


def network(
    x: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor, b: torch.Tensor, a: torch.Tensor, scaling: float
):
    """The toy network for one set of LoRA factors b (n×r), a (r×n): returns out (N,), Z_A = A·φ(Y_in) (N×r)."""
    y_in = x @ w_in.T
    z_a = y_in.relu() @ a.T
    y_h = y_in + scaling * z_a @ b.T
    return y_h.relu() @ w_out, z_a


def make_problem(width: int, seed: int, config: ToyConfig) -> Problem:
    """Draw the frozen network, the planted update and the data for one (width, seed), in float64 on the CPU."""
    gen = torch.Generator().manual_seed(1_000_003 * seed + width)
    d, r, n = config.d, config.r, width
    w_in = torch.randn(n, d, generator=gen, dtype=torch.float64) / d**0.5
    w_out = torch.randn(n, generator=gen, dtype=torch.float64) / n**0.5
    a_star = torch.randn(r, n, generator=gen, dtype=torch.float64) / n**0.5
    b_star = torch.randn(n, r, generator=gen, dtype=torch.float64)
    x = torch.randn(config.n_train + config.n_test, d, generator=gen, dtype=torch.float64)
    y, _ = network(x, w_in, w_out, b_star, a_star, config.scaling)
    return Problem(n, w_in, w_out, x[: config.n_train], y[: config.n_train], x[config.n_train :], y[config.n_train :])


def init_factors(init: str, width: int, seed: int, config: ToyConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A student's starting (A, B), so that B·A = 0: Init[A] draws A ~ N(0, scale²/n) and sets B = 0; Init[B]
    draws B ~ N(0, scale²/r) and sets A = 0. The draw depends only on (init, width, seed)."""
    if init not in INITS:
        raise ValueError(f"init: unknown init {init!r} (known: {', '.join(INITS)})")
    gen = torch.Generator().manual_seed(2_000_003 * seed + 7 * width + INITS.index(init))
    a = torch.zeros(config.r, width, dtype=torch.float64)
    b = torch.zeros(width, config.r, dtype=torch.float64)
    if init == "A":
        a.normal_(0.0, config.init_scale_a / width**0.5, generator=gen)
    else:
        b.normal_(0.0, config.init_scale_b / config.r**0.5, generator=gen)
    return a, b
