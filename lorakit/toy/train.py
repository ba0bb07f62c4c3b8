"""Train many toy students at one width at once: every (init, lr, seed) is one slice of a stacked tensor program.

Forward and backward are written out by hand (the model is three matrix products and a ReLU), so one step of all
students is a handful of batched matrix products; Adam runs on the whole stack in float64. A student whose loss
passes the divergence threshold is frozen and dropped from the stack, which is where most of the large-lr work goes.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from lorakit.toy.model import ToyConfig, init_factors, make_problem, network

CURVES = ("train_loss", "rms_z_a", "rms_z_b")
CHUNK_BYTES = 64 * 2**20  # activation buffer per chunk of students (two such buffers are live)


@dataclass(frozen=True)
class Student:
    init: str
    lr: float  # the learning rate of A; B's is lr · loraplus_ratio
    seed: int


@dataclass
class WidthResult:
    """Final numbers per student (tensors of length S, in `students` order) and training curves (S × K)."""

    width: int
    students: list[Student]
    initial_loss: torch.Tensor
    train_loss: torch.Tensor
    test_loss: torch.Tensor
    rms_z_a: torch.Tensor
    rms_z_b: torch.Tensor
    diverged_at: torch.Tensor  # step at which the loss crossed the threshold; -1 if it never did
    curve_steps: list[int] = field(default_factory=list)
    curves: dict[str, torch.Tensor] = field(default_factory=dict)  # train_loss, rms_z_a, rms_z_b: (S, K)


class SeedGroup:
    """The part of a width's work shared by all students of one seed: the problem and its frozen activations."""

    def __init__(self, width: int, seed: int, config: ToyConfig):
        dtype = getattr(torch, config.compute_dtype)
        self.problem = make_problem(width, seed, config)
        y_in = self.problem.x_train @ self.problem.w_in.T
        self.y_in = y_in.to(dtype)  # (N, n)
        self.features = y_in.relu().to(dtype)  # φ(Y_in), the input of A
        self.w_out = self.problem.w_out.to(dtype)[:, None]  # (n, 1)
        self.y = self.problem.y_train.to(dtype)[:, None]  # (N, 1)


def lora_gradients(group: SeedGroup, z_a: torch.Tensor, b: torch.Tensor, scaling: float, chunk: int):
    """Loss, dL/dZ_A and dL/dB for a stack of students sharing one seed; z_a (S, N, r), b (S, n, r)."""
    students, n_data, n = z_a.shape[0], z_a.shape[1], b.shape[1]
    loss = torch.empty(students, dtype=torch.float64)
    grad_z = torch.empty_like(z_a)
    grad_b = torch.empty(students, b.shape[2], n, dtype=z_a.dtype)  # stored as dL/dBᵀ
    scaled_bt = (scaling * b).transpose(1, 2).to(z_a.dtype)
    w_b = (scaling * b).to(z_a.dtype) * group.w_out
    hidden = torch.empty(min(chunk, students), n_data, n, dtype=z_a.dtype)
    mask = torch.empty_like(hidden)
    for start in range(0, students, chunk):
        part = slice(start, min(start + chunk, students))
        k = part.stop - part.start
        y_h = torch.baddbmm(group.y_in, z_a[part], scaled_bt[part], out=hidden[:k])
        active = torch.gt(y_h, 0, out=mask[:k])
        residual = torch.matmul(y_h.relu_(), group.w_out) - group.y  # (k, N, 1)
        loss[part] = residual.double().square().mean(dim=(1, 2))
        d_out = residual * (2.0 / n_data)
        grad_z[part] = torch.bmm(active, w_b[part]) * d_out
        grad_b[part] = torch.bmm((d_out * z_a[part]).transpose(1, 2), active) * (scaling * group.w_out.T)
    return loss, grad_z, grad_b.transpose(1, 2)


class StudentStack:
    """The active students of one width: factors and Adam moments stacked along dim 0, grouped by seed."""

    def __init__(self, width: int, students: list[Student], config: ToyConfig):
        self.config = config
        self.index = torch.arange(len(students))  # position in the caller's list of each active student
        self.seeds = torch.tensor([s.seed for s in students])
        factors = [init_factors(s.init, width, s.seed, config) for s in students]
        self.a = torch.stack([a for a, _ in factors])  # (S, r, n)
        self.b = torch.stack([b for _, b in factors])  # (S, n, r)
        self.lr_a = torch.tensor([s.lr for s in students], dtype=torch.float64)[:, None, None]
        self.lr_b = self.lr_a * config.loraplus_ratio
        self.moments = [torch.zeros_like(t) for t in (self.a, self.b, self.a, self.b)]  # m_A, m_B, v_A, v_B

    def seed_slices(self) -> list[tuple[int, slice]]:
        seeds, counts = torch.unique_consecutive(self.seeds, return_counts=True)
        ends = torch.cumsum(counts, 0).tolist()
        return [
            (seed, slice(end - count, end))
            for seed, count, end in zip(seeds.tolist(), counts.tolist(), ends, strict=True)
        ]

    def keep(self, kept: torch.Tensor) -> None:
        for name in ("index", "seeds", "a", "b", "lr_a", "lr_b"):
            setattr(self, name, getattr(self, name)[kept])
        self.moments = [t[kept] for t in self.moments]

    def adam_step(self, step: int, grad_a: torch.Tensor, grad_b: torch.Tensor) -> None:
        """One Adam step (bias-corrected, no weight decay) on every active student with its own learning rates."""
        c = self.config
        m_a, m_b, v_a, v_b = self.moments
        for param, grad, m, v, lr in ((self.a, grad_a, m_a, v_a, self.lr_a), (self.b, grad_b, m_b, v_b, self.lr_b)):
            m.lerp_(grad, 1 - c.beta1)
            v.mul_(c.beta2).addcmul_(grad, grad, value=1 - c.beta2)
            denom = (v / (1 - c.beta2**step)).sqrt_().add_(c.eps)
            param.addcdiv_(m * (lr / (1 - c.beta1**step)), denom, value=-1.0)


def forward_backward(stack: StudentStack, groups: dict[int, SeedGroup], chunk: int):
    """Loss, gradients and RMS of Z_A = A·φ(Y_in) and Z_B = (α/r)·B·Z_A for every active student."""
    c = stack.config
    students, r, n = stack.a.shape
    loss = torch.empty(students, dtype=torch.float64)
    grad_a, grad_b = torch.empty_like(stack.a), torch.empty_like(stack.b)
    rms_z_a, rms_z_b = torch.empty_like(loss), torch.empty_like(loss)
    for seed, part in stack.seed_slices():
        group = groups[seed]
        k, n_data = part.stop - part.start, group.features.shape[0]
        a = stack.a[part].reshape(k * r, n).to(group.features.dtype)
        z_a = (group.features @ a.T).reshape(n_data, k, r).transpose(0, 1).contiguous()  # (k, N, r)
        loss[part], grad_z, grad_b[part] = lora_gradients(group, z_a, stack.b[part], c.scaling, chunk)
        grad_a[part] = (grad_z.transpose(1, 2).reshape(k * r, n_data) @ group.features).reshape(k, r, n)
        z64 = z_a.double()
        rms_z_a[part] = z64.square().mean(dim=(1, 2)).sqrt()
        gram = (z64.transpose(1, 2) @ z64) * (stack.b[part].transpose(1, 2) @ stack.b[part])
        rms_z_b[part] = c.scaling * (gram.sum(dim=(1, 2)) / (n_data * n)).sqrt()
    return loss, grad_a, grad_b, rms_z_a, rms_z_b


def curve_steps(config: ToyConfig) -> list[int]:
    return sorted({*range(0, config.steps, config.record_every), config.steps})


def train_width(
    width: int, students: list[Student], config: ToyConfig, on_step: Callable[[int], None] | None = None
) -> WidthResult:
    """Train all `students` at one width with full-batch Adam for `config.steps` steps.

    The loss at step t is measured before the t-th update, so `train_loss` is that of the final weights. A student is
    unstable once its loss exceeds `divergence_factor` × its initial loss (or is not finite): it is frozen there and
    leaves the stack. `on_step(k)` is called after each step with the number of students still training."""
    students = sorted(students, key=lambda s: s.seed)
    stack = StudentStack(width, students, config)
    groups = {seed: SeedGroup(width, seed, config) for seed in sorted({s.seed for s in students})}
    itemsize = torch.empty(0, dtype=getattr(torch, config.compute_dtype)).element_size()
    chunk = max(1, CHUNK_BYTES // (config.n_train * width * itemsize))
    total = len(students)
    recorded = curve_steps(config)
    result = WidthResult(
        width, students, *(torch.full((total,), float("nan"), dtype=torch.float64) for _ in range(5)),
        diverged_at=torch.full((total,), -1), curve_steps=recorded,
        curves={name: torch.full((total, len(recorded)), float("nan")) for name in CURVES},
    )  # fmt: skip
    final_a, final_b = stack.a.clone(), stack.b.clone()
    for step in range(config.steps + 1):
        loss, grad_a, grad_b, rms_z_a, rms_z_b = forward_backward(stack, groups, chunk)
        idx = stack.index
        if step == 0:
            result.initial_loss[idx] = loss
        result.train_loss[idx], result.rms_z_a[idx], result.rms_z_b[idx] = loss, rms_z_a, rms_z_b
        if step in recorded:
            column = recorded.index(step)
            for name, values in (("train_loss", loss), ("rms_z_a", rms_z_a), ("rms_z_b", rms_z_b)):
                result.curves[name][idx, column] = values.float()
        unstable = ~(loss <= config.divergence_factor * result.initial_loss[idx])
        if unstable.any() or step == config.steps:
            gone = unstable if step < config.steps else torch.ones_like(unstable)
            final_a[idx[gone]], final_b[idx[gone]] = stack.a[gone], stack.b[gone]
            result.diverged_at[idx[unstable]] = step
            stack.keep(~gone)
            grad_a, grad_b = grad_a[~gone], grad_b[~gone]
        if len(stack.index) == 0:
            break
        stack.adam_step(step + 1, grad_a, grad_b)
        if on_step is not None:
            on_step(len(stack.index))
    result.test_loss[:] = test_losses(students, groups, final_a, final_b, config)
    return result


def test_losses(students, groups, final_a, final_b, config: ToyConfig) -> torch.Tensor:
    losses = []
    for student, a, b in zip(students, final_a, final_b, strict=True):
        p = groups[student.seed].problem
        out, _ = network(p.x_test, p.w_in, p.w_out, b, a, config.scaling)
        losses.append((out - p.y_test).square().mean())
    return torch.stack(losses)
