"""The toy teacher–student experiment: hand-written gradients, init contracts, batching, and the paper's ordering."""

import math

import pandas as pd
import pytest
import torch

import run_toy
from lorakit.toy import analysis, experiment
from lorakit.toy.model import ToyConfig, init_factors, make_problem, network
from lorakit.toy.train import SeedGroup, Student, StudentStack, forward_backward, train_width

TINY = ToyConfig(n_train=12, n_test=5, steps=6, compute_dtype="float64", record_every=2)


def random_stack(width: int, count: int, config: ToyConfig) -> StudentStack:
    stack = StudentStack(width, [Student("A", 1e-2, 0)] * count, config)
    gen = torch.Generator().manual_seed(5)
    stack.a = torch.randn(stack.a.shape, generator=gen, dtype=torch.float64)
    stack.b = torch.randn(stack.b.shape, generator=gen, dtype=torch.float64)
    return stack


@pytest.mark.parametrize("chunk", [1, 2, 8])
def test_hand_written_gradients_match_autograd(chunk):
    stack = random_stack(16, 3, TINY)
    group = SeedGroup(16, 0, TINY)
    loss, grad_a, grad_b, rms_z_a, rms_z_b = forward_backward(stack, {0: group}, chunk)
    p = group.problem
    for k in range(3):
        a, b = stack.a[k].clone().requires_grad_(), stack.b[k].clone().requires_grad_()
        out, z_a = network(p.x_train, p.w_in, p.w_out, b, a, TINY.scaling)
        expected = (out - p.y_train).square().mean()
        expected.backward()
        assert loss[k].item() == pytest.approx(expected.item(), rel=1e-10)
        torch.testing.assert_close(grad_a[k], a.grad, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(grad_b[k], b.grad, rtol=1e-9, atol=1e-12)
        assert rms_z_a[k].item() == pytest.approx(z_a.square().mean().sqrt().item(), rel=1e-10)
        z_b = TINY.scaling * z_a @ b.T
        assert rms_z_b[k].item() == pytest.approx(z_b.square().mean().sqrt().item(), rel=1e-10)


@pytest.mark.parametrize("init", ["A", "B"])
def test_student_starts_at_the_frozen_network(init):
    """B·A = 0 at init, so the student's output is the frozen network's, and only the chosen factor is random."""
    width = 2048
    a, b = init_factors(init, width, seed=3, config=TINY)
    p = make_problem(width, 3, TINY)
    out, _ = network(p.x_train, p.w_in, p.w_out, b, a, TINY.scaling)
    base, _ = network(p.x_train, p.w_in, p.w_out, torch.zeros_like(b), torch.zeros_like(a), TINY.scaling)
    assert torch.equal(out, base)
    random, zero = (a, b) if init == "A" else (b, a)
    assert torch.count_nonzero(zero) == 0
    expected_var = 1 / width if init == "A" else 1 / TINY.r
    assert random.var().item() == pytest.approx(expected_var, rel=0.05)


def test_adam_step_matches_torch_adam():
    stack = random_stack(16, 1, TINY)
    a, b = stack.a[0].clone().requires_grad_(), stack.b[0].clone().requires_grad_()
    reference = torch.optim.Adam([a, b], lr=1e-2, betas=(TINY.beta1, TINY.beta2), eps=TINY.eps)
    gen = torch.Generator().manual_seed(1)
    for step in range(1, 4):
        grad_a, grad_b = torch.randn(a.shape, generator=gen, dtype=a.dtype), torch.randn(b.shape, generator=gen,
                                                                                         dtype=b.dtype)  # fmt: skip
        a.grad, b.grad = grad_a.clone(), grad_b.clone()
        reference.step()
        stack.adam_step(step, grad_a[None], grad_b[None])
    torch.testing.assert_close(stack.a[0], a.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(stack.b[0], b.detach(), rtol=1e-12, atol=1e-14)


def test_stacked_students_train_as_if_alone():
    """Stacking (and dropping unstable students mid-run) does not couple students: each matches its solo run."""
    students = [Student("A", 3e-2, 0), Student("B", 1e-2, 1), Student("A", 1e3, 1), Student("B", 3e-3, 0)]
    together = train_width(32, students, TINY)
    assert together.diverged_at.tolist().count(-1) == 3, "only the lr = 1000 student goes unstable"
    for k, student in enumerate(together.students):
        alone = train_width(32, [student], TINY)
        assert alone.train_loss[0].item() == pytest.approx(together.train_loss[k].item(), rel=1e-9)
        assert alone.test_loss[0].item() == pytest.approx(together.test_loss[k].item(), rel=1e-9)


def test_unstable_student_is_flagged_and_frozen():
    config = ToyConfig(n_train=12, n_test=5, steps=30, compute_dtype="float64")
    result = train_width(64, [Student("A", 10.0, 0), Student("A", 1e-3, 0)], config)
    assert 0 < result.diverged_at[0] < 30
    assert result.train_loss[0] > config.divergence_factor * result.initial_loss[0]
    assert result.diverged_at[1] == -1 and result.train_loss[1] < result.initial_loss[1]


def test_refined_minimum_stays_inside_the_bracket():
    log_lr = [-3.0, -2.5, -2.0, -1.5]
    assert analysis.refined_minimum(torch.tensor(log_lr).numpy(), torch.tensor([1.0, 0.0, 0.0, 2.0]).numpy()) == -2.25
    assert analysis.refined_minimum(torch.tensor(log_lr).numpy(), torch.tensor([0.0, 1.0, 2.0, 3.0]).numpy()) == -3.0
    assert analysis.fitted_exponent([100, 400, 1600], [1.0, 0.5, 0.25]) == pytest.approx(-0.5)


def test_reduced_sweep_orders_init_a_above_init_b(tmp_path, capsys):
    """The paper's ordering at the largest width of a small sweep: Init[A]'s optimal lr is larger and its best
    test loss no worse."""
    argv = ["--widths", "128", "1024", "--lr_min", "3e-4", "--lr_max", "0.3", "--output_dir", str(tmp_path),
            "--figures", "false"]  # fmt: skip
    assert run_toy.main(argv) == 0
    best = pd.read_csv(tmp_path / "optima.csv").set_index(["init", "width"])
    assert best.loc[("A", 1024), "optimal_lr"] > best.loc[("B", 1024), "optimal_lr"]
    assert best.loc[("A", 1024), "best_test_loss"] <= best.loc[("B", 1024), "best_test_loss"]
    table = pd.read_csv(tmp_path / "results.csv")
    assert len(table) == 2 * 2 * 13 * 3 and not table.duplicated(["width", "init", "lr", "seed"]).any()
    assert {"train_loss", "test_loss", "rms_z_a", "rms_z_b", "diverged"} <= set(table.columns)
    assert "pass" in capsys.readouterr().out


def test_run_writes_tables_and_figures_and_resumes(tmp_path, capsys):
    argv = ["--widths", "16", "32", "--lrs", "1e-3", "1e-2", "1e-1", "--seeds", "0", "--steps", "10",
            "--n_train", "16", "--output_dir", str(tmp_path)]  # fmt: skip
    assert run_toy.main(argv) == 0
    for name in ("results.csv", "curves.csv", "optima.csv", "checks.csv", "run_config.json"):
        assert (tmp_path / name).stat().st_size > 0
    for name in ("loss_vs_lr.png", "optimal_lr_vs_width.png", "feature_norms.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    first = pd.read_csv(tmp_path / "results.csv")
    curves = pd.read_csv(tmp_path / "curves.csv")
    assert set(curves["step"]) >= {0, 10} and len(first) == 2 * 2 * 3
    capsys.readouterr()
    assert run_toy.main([*argv, "--widths", "16", "32", "64"]) == 0
    assert "resuming: widths [16, 32]" in capsys.readouterr().out
    again = pd.read_csv(tmp_path / "results.csv")
    assert len(again) == 3 * 2 * 3
    pd.testing.assert_frame_equal(again[again["width"] < 64].reset_index(drop=True), first)


def test_tables_from_other_settings_are_not_resumed(tmp_path, monkeypatch):
    argv = ["--widths", "16", "--lrs", "1e-2", "--seeds", "0", "--n_train", "16", "--output_dir", str(tmp_path),
            "--figures", "false"]  # fmt: skip
    assert run_toy.main([*argv, "--steps", "10"]) == 0
    assert experiment.finished_widths(experiment.ToyArguments(widths=[16], lrs=[1e-2], seeds=[0], n_train=16, steps=10,
                                                        output_dir=str(tmp_path)), tmp_path)[0]  # fmt: skip

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "train_width", killed)
    assert run_toy.main([*argv, "--steps", "20"]) == 130  # Ctrl-C: one line, the exit code of SIGINT
    assert not (tmp_path / "results.csv").exists(), "the steps=10 table would be resumed as if it were steps=20"


@pytest.mark.parametrize(
    "argv, field",
    [
        (["--widths", "0", "64"], "widths"),
        (["--widths", "2", "64", "--rank", "4"], "rank"),
        (["--lr_min", "1e-1", "--lr_max", "1e-3"], "lr_min, lr_max"),
        (["--inits", "A", "C"], "inits"),
        (["--lrs", "0.01", "-1"], "lrs"),
        (["--steps", "0"], "steps"),
    ],
)
def test_bad_input_is_one_line(argv, field, capsys, tmp_path):
    assert run_toy.main([*argv, "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"run_toy.py: error: {field}")
    assert not (tmp_path / "out").exists()


def test_lr_grid_spacing():
    args = experiment.ToyArguments()
    lrs = args.learning_rates()
    assert len(lrs) == 19 and lrs[0] == pytest.approx(10**-4.5) and lrs[-1] == pytest.approx(1.0)
    assert max(math.log10(b / a) for a, b in zip(lrs, lrs[1:], strict=False)) <= 0.25 + 1e-9
