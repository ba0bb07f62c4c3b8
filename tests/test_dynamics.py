"""`--lora_diagnostics_steps`: every quantity it writes equals the paper's formula computed here, from factors and
layer inputs this file records on its own (a callback and hooks of its own on the same Trainer), for Init[A] and
Init[B], in a single run and for each member of a pack; measuring changes no adapter and no logged loss; the summary
reaches TensorBoard; a resumed run measures each step once; a bad interval is a one-line error."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from transformers import TrainerCallback

import run_glue
from lorakit.dynamics import __main__ as dynamics_cli
from lorakit.packing.layers import PackedLoraLinear
from lorakit.runs.pack import run_pack
from lorakit.sweeps.report import write_report
from lorakit.sweeps.store import final_diagnostics

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--task_name", "sst2", "--max_steps", "4", "--per_device_train_batch_size", "8", "--logging_steps", "1"]
COMMON += [
    "--eval_strategy",
    "no",
    "--lora_dropout",
    "0",
    "--seed",
    "3",
    "--max_seq_length",
    "16",
    "--warmup_steps",
    "0",
]
QUANTITIES = ["rms_z_a", "rms_a0_x", "rms_update_x", "rms_z_b", "rms_delta1", "rms_delta2", "rms_delta3"]
QUANTITIES += ["rms_a", "rms_b", "norm_a", "norm_b", "moved_a", "moved_b", "rms_moved_a", "rms_moved_b"]


def argv(model, glue_dir, out, scheme, lr, *extra) -> list[str]:
    settings = ["--model_name_or_path", str(model), "--glue_dir", str(glue_dir), "--output_dir", str(out)]
    return [*settings, "--lora_init", scheme, "--learning_rate", str(lr), *COMMON, *extra]


class Witness(TrainerCallback):
    """What the formulas need, recorded by this test alone: each LoRA layer's (A, B) at the start and before and
    after every step, and its inputs during the step (per adapter: a pack's K slices)."""

    def __init__(self, model):
        self.layers = {}  # (adapter, name) → (module, index or None)
        for name, module in model.named_modules():
            if isinstance(module, PackedLoraLinear):
                self.layers |= {(k, name.split("packed.", 1)[-1]): (module, k) for k in range(module.num_adapters)}
            elif isinstance(module, LoraLayer):
                self.layers[(None, name.split("base_model.model.", 1)[-1])] = (module, None)
        self.initial, self.steps, self.inputs, self.before = self.factors(), {}, {}, None
        for key, (module, index) in self.layers.items():
            module.register_forward_pre_hook(self.keep(key, index))

    def factors(self) -> dict:
        found = {}
        for key, (module, index) in self.layers.items():
            if index is None:
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
            else:
                a, b = module.lora_A[index], module.lora_B[index]
            found[key] = (a.detach().double().clone(), b.detach().double().clone())
        return found

    def keep(self, key, index):
        def hook(module, args):
            x = args[0].detach().double()
            if index is not None:
                x = x.reshape(module.num_adapters, -1, x.shape[-1])[index]
            self.inputs[key] = x.reshape(-1, x.shape[-1]).clone()

        return hook

    def on_step_begin(self, args, state, control, **kwargs):
        self.before, self.inputs = self.factors(), {}

    def on_step_end(self, args, state, control, **kwargs):
        self.steps[state.global_step] = (self.before, self.factors(), dict(self.inputs))


def expected(witness: Witness, key, step: int) -> dict:
    """The paper's quantities for one layer at one step, written out here in float64."""
    before, after, inputs = witness.steps[step]
    (a0, b0), (a1, b1), (a2, b2), x = witness.initial[key], before[key], after[key], inputs[key]
    module, index = witness.layers[key]
    s = float(module.scaling["default"] if index is None else module.scaling[index])

    def rms(t):
        return float(torch.sqrt(torch.mean(t**2)))

    za1, za2 = x @ a1.T, x @ a2.T
    return {
        "rms_z_a": rms(za2), "rms_a0_x": rms(x @ a0.T), "rms_update_x": rms(x @ (a2 - a0).T),
        "rms_z_b": rms(s * za2 @ b2.T), "rms_delta1": rms(s * (za2 - za1) @ b1.T),
        "rms_delta2": rms(s * za1 @ (b2 - b1).T), "rms_delta3": rms(s * (za2 - za1) @ (b2 - b1).T),
        "rms_a": rms(a2), "rms_b": rms(b2), "norm_a": float(a2.norm()), "norm_b": float(b2.norm()),
        "moved_a": float((a2 - a0).norm()), "moved_b": float((b2 - b0).norm()),
        "rms_moved_a": rms(a2 - a0), "rms_moved_b": rms(b2 - b0),
    }  # fmt: skip


def witnessed(monkeypatch, where: str) -> list[Witness]:
    """Every Trainer `where` builds gets a Witness (as its first callback: it sees the model before any step)."""
    made = []
    original = getattr(sys.modules[where.rsplit(".", 1)[0]], where.rsplit(".", 1)[1])

    class Witnessed(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(Witness(self.model))
            self.add_callback(made[-1])

    monkeypatch.setattr(where, Witnessed)
    return made


def rows(folder: Path, name: str = "diagnostics.jsonl") -> list[dict]:
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


def check_rows(folder: Path, witness: Witness, adapter, steps: list[int]) -> None:
    found = rows(folder)
    assert sorted({r["step"] for r in found}) == steps
    layers = sorted(name for k, name in witness.layers if k == adapter)
    for step in steps:
        at_step = {r["layer"]: r for r in found if r["step"] == step}
        assert sorted(at_step) == layers
        for name, row in at_step.items():
            assert row["module_type"] == "Linear" and row["target"] in ("query", "value")
            want = expected(witness, (adapter, name), step)
            for quantity in QUANTITIES:
                assert row[quantity] == pytest.approx(want[quantity], rel=1e-6, abs=1e-12), (step, name, quantity)
    summary = rows(folder, "diagnostics_summary.jsonl")
    assert [r["step"] for r in summary] == steps
    for mean in summary:
        at_step = [r for r in found if r["step"] == mean["step"]]
        assert mean["rms_z_a"] == pytest.approx(sum(r["rms_z_a"] for r in at_step) / len(at_step), rel=1e-12)


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_each_quantity_of_a_single_run_equals_the_formula(
    scheme, no_dropout_bert, tiny_glue_dir, tmp_path, monkeypatch
):
    made = witnessed(monkeypatch, "lorakit.runs.single.LoraTrainer")
    settings = argv(no_dropout_bert, tiny_glue_dir, tmp_path, scheme, 5e-3, "--lora_diagnostics_steps", "2")
    assert run_glue.main(settings) == 0
    check_rows(tmp_path, made[0], None, [1, 2, 4])
    first = rows(tmp_path)[0]
    if scheme == "A":  # B = 0 at the start: Z_B is B's own update alone, and A's update is invisible through B
        assert first["rms_delta1"] == 0 and first["rms_z_b"] > 0 and first["rms_a0_x"] > 0
    else:  # A = 0 at the start: all of Z_A is A's update, and B's update sees no Z_A yet
        assert first["rms_a0_x"] == 0 and first["rms_delta2"] == 0 and first["rms_update_x"] > 0


def test_each_quantity_of_each_member_of_a_pack_equals_the_formula(
    no_dropout_bert, tiny_glue_dir, tmp_path, monkeypatch
):
    made = witnessed(monkeypatch, "lorakit.runs.pack.PackedTrainer")
    members = [argv(no_dropout_bert, tiny_glue_dir, tmp_path / f"m{i}", s, 5e-3) for i, s in enumerate("AB")]
    members = [[*m, "--lora_diagnostics_steps", "3"] for m in members]
    assert run_pack("glue", members, str(tmp_path / "pack")) == 0
    for index in range(2):
        check_rows(tmp_path / f"m{index}", made[0], index, [1, 3])


def test_a_pack_member_that_diverged_is_no_longer_measured(no_dropout_bert, tiny_glue_dir, tmp_path):
    members = [argv(no_dropout_bert, tiny_glue_dir, tmp_path / f"m{i}", "A", lr) for i, lr in enumerate([1e-3, 1e6])]
    assert run_pack("glue", [[*m, "--lora_diagnostics_steps", "1"] for m in members], str(tmp_path / "pack")) == 0
    wild = json.loads((tmp_path / "m1" / "metrics.json").read_text())
    assert wild["status"] == "diverged"
    assert [r["step"] for r in rows(tmp_path / "m0", "diagnostics_summary.jsonl")] == [1, 2, 3, 4]
    assert max(r["step"] for r in rows(tmp_path / "m1", "diagnostics_summary.jsonl")) < wild["diverged_at_step"]


def logged_losses(folder: Path) -> list[float]:
    state = json.loads(next(folder.glob("checkpoint-*/trainer_state.json")).read_text())
    return [row["loss"] for row in state["log_history"] if "loss" in row]


def test_measuring_changes_no_adapter_and_no_logged_loss(no_dropout_bert, tiny_glue_dir, tmp_path):
    seen = {}
    for measured in (False, True):  # LoRA dropout on: a random number drawn by measuring would change the masks
        extra = ["--save_strategy", "steps", "--save_steps", "4", "--lora_dropout", "0.1"]
        extra += ["--lora_diagnostics_steps", "1"] * measured
        single, pack = tmp_path / f"single_{measured}", tmp_path / f"pack_{measured}"
        assert run_glue.main(argv(no_dropout_bert, tiny_glue_dir, single, "B", 5e-3, *extra)) == 0
        folders = [tmp_path / f"member{i}_{measured}" for i in range(2)]
        configs = zip(folders, "AB", strict=True)
        members = [argv(no_dropout_bert, tiny_glue_dir, f, s, 5e-3, *extra) for f, s in configs]
        assert run_pack("glue", members, str(pack)) == 0
        adapters = [load_file(f / "adapter_model.safetensors") for f in [single, *folders]]
        seen[measured] = adapters, [logged_losses(single), logged_losses(pack)]
        assert (single / "diagnostics.jsonl").exists() == measured
        assert all((f / "diagnostics.jsonl").exists() == measured for f in folders)
    (off_adapters, off_losses), (on_adapters, on_losses) = seen[False], seen[True]
    assert on_losses == off_losses and [len(losses) for losses in on_losses] == [4, 4]  # bit for bit
    for off, on in zip(off_adapters, on_adapters, strict=True):
        assert off.keys() == on.keys() and all(torch.equal(off[k], on[k]) for k in off)


def test_accumulated_and_checkpointed_micro_batches_measure_what_one_batch_measures(
    no_dropout_bert, tiny_glue_dir, tmp_path
):
    """Every example has the same length here, so the 8 sequences of one batch and of two accumulated micro-batches
    of 4 give the same input rows; gradient checkpointing's second forward must not add rows."""
    measured = ["--lora_diagnostics_steps", "2"]
    assert run_glue.main(argv(no_dropout_bert, tiny_glue_dir, tmp_path / "one", "B", 5e-3, *measured)) == 0
    split = ["--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2"]
    split += ["--gradient_checkpointing", "true"]
    assert run_glue.main(argv(no_dropout_bert, tiny_glue_dir, tmp_path / "split", "B", 5e-3, *measured, *split)) == 0
    one, two = rows(tmp_path / "one"), rows(tmp_path / "split")
    assert [(r["step"], r["layer"], r["tokens"]) for r in two] == [(r["step"], r["layer"], r["tokens"]) for r in one]
    assert {r["step"] for r in one} == {1, 2, 4} and one[0]["tokens"] == 8 * 7  # 5 words, [CLS] and [SEP]
    for mine, theirs in zip(two, one, strict=True):
        assert [mine[q] for q in QUANTITIES] == pytest.approx([theirs[q] for q in QUANTITIES], rel=1e-4, abs=1e-9)


def test_a_resume_without_diagnostics_drops_the_rows_past_its_checkpoint(no_dropout_bert, tiny_glue_dir, tmp_path):
    settings = argv(no_dropout_bert, tiny_glue_dir, tmp_path, "A", 5e-3, "--save_strategy", "steps")
    settings += ["--save_steps", "2", "--max_steps", "4"]
    assert run_glue.main([*settings, "--lora_diagnostics_steps", "1"]) == 0
    (tmp_path / "metrics.json").write_text(
        json.dumps({**json.loads((tmp_path / "metrics.json").read_text()), "status": "interrupted"})
    )
    shutil.rmtree(tmp_path / "checkpoint-4")
    assert run_glue.main(settings) == 0  # resumes from step 2, measuring nothing
    assert [r["step"] for r in rows(tmp_path, "diagnostics_summary.jsonl")] == [1, 2]
    assert {r["step"] for r in rows(tmp_path)} == {1, 2}


def test_diagnostics_under_a_sharding_engine_are_a_one_line_error(tmp_path):
    command = [sys.executable, "run_glue.py", "--lora_diagnostics_steps", "5", "--output_dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ,
                          "ACCELERATE_USE_FSDP": "true"})  # fmt: skip
    assert done.returncode == 2 and "lora_diagnostics_steps" in done.stderr and "FSDP" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_summary_reaches_tensorboard(no_dropout_bert, tiny_glue_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    extra = ["--lora_diagnostics_steps", "2", "--report_to", "tensorboard"]
    assert run_glue.main(argv(no_dropout_bert, tiny_glue_dir, tmp_path / "run", "A", 5e-3, *extra)) == 0
    events = EventAccumulator(str(next((tmp_path / "run").rglob("events.out.tfevents.*")).parent))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/diag/rms_z_a", "train/diag/rms_z_b", "train/diag/rms_delta1", "train/diag/rms_delta2"} <= set(tags)
    assert [e.step for e in events.Scalars("train/diag/rms_z_a")] == [1, 2, 4]


def test_a_resumed_run_measures_each_step_once(no_dropout_bert, tiny_glue_dir, tmp_path):
    settings = argv(no_dropout_bert, tiny_glue_dir, tmp_path, "A", 5e-3, "--lora_diagnostics_steps", "1")
    settings += ["--save_strategy", "steps", "--save_steps", "2", "--max_steps", "4"]
    assert run_glue.main(settings) == 0
    complete = rows(tmp_path)
    (tmp_path / "metrics.json").write_text(
        json.dumps({**json.loads((tmp_path / "metrics.json").read_text()), "status": "interrupted"})
    )
    shutil.rmtree(tmp_path / "checkpoint-4")
    assert run_glue.main(settings) == 0  # resumes from step 2, measures 3 and 4 again
    again = rows(tmp_path)
    assert [(r["step"], r["layer"]) for r in again] == [(r["step"], r["layer"]) for r in complete]
    assert [r["rms_z_a"] for r in again] == pytest.approx([r["rms_z_a"] for r in complete], rel=1e-6)


@pytest.mark.parametrize("value", ["0", "-5", "1.5"])
def test_a_diagnostic_interval_that_is_not_a_positive_integer_is_a_one_line_error(value, tmp_path):
    command = [sys.executable, "run_glue.py", "--lora_diagnostics_steps", value, "--output_dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "lora_diagnostics_steps" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def write_summary(folder: Path, init: str, lr: float, values: list[float]) -> Path:
    """A run folder as a run with diagnostics leaves it: its config and one summary row per measured step."""
    folder.mkdir(parents=True)
    (folder / "run_config.json").write_text(json.dumps({"training": {"lora_init": init, "learning_rate": lr}}))
    rows = [{"step": 10 * i + 1, "layers": 2, **dict.fromkeys(QUANTITIES, v)} for i, v in enumerate(values)]
    (folder / "diagnostics_summary.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_a_sweep_row_carries_the_last_measured_step(tmp_path):
    folder = write_summary(tmp_path / "run", "A", 1e-3, [0.5, 0.25])
    final = final_diagnostics(folder)
    assert final["diag_step"] == 11 and final["diag_rms_z_a"] == 0.25 and "diag_layers" not in final
    assert final_diagnostics(tmp_path / "elsewhere") == {}


def test_the_sweep_report_draws_final_dynamics_against_lr_per_init(tmp_path):
    rows = []
    for init, lr, ratio, seed in [(i, lr, r, s) for i in "AB" for lr in (1e-3, 1e-2) for r in (1, 4) for s in (0, 1)]:
        value = (2.0 if init == "A" else 1.0) * lr * ratio * (1 + seed)
        rows.append({"run_id": f"{init}{lr}{ratio}{seed}", "lora_init": init, "learning_rate": lr, "seed": seed,
                     "loraplus_lr_ratio": ratio, "status": "done", "final_eval_accuracy": 0.8, "diag_step": 63,
                     **{f"diag_{q}": value for q in QUANTITIES}})  # fmt: skip
    diverged = {"run_id": "B0.1", "learning_rate": 0.1, "status": "diverged", "diag_step": 2}  # measured until then
    rows.append({**rows[-1], **diverged, **{f"diag_{q}": 1e3 for q in QUANTITIES}})
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    paths = write_report(tmp_path, "eval_accuracy", True, {"task_name": "sst2"})
    table = pd.read_csv(paths["dynamics"]).set_index(["lora_init", "learning_rate", "loraplus_lr_ratio"])
    assert len(table) == 8  # init × lr × ratio; the diverged run's last measurement is of another step: left out
    assert table.loc[("A", 1e-2, 4), "diag_rms_z_a"] == pytest.approx(2.0 * 1e-2 * 4 * 1.5)
    assert table.loc[("B", 1e-3, 1), "diag_rms_delta2"] == pytest.approx(1e-3 * 1.5)
    assert paths["dynamics_vs_lr"].stat().st_size > 10_000
    (tmp_path / "plain").mkdir()
    pd.DataFrame(rows).drop(columns=[c for c in rows[0] if c.startswith("diag_")]).to_csv(
        tmp_path / "plain" / "results.csv", index=False
    )
    assert "dynamics" not in write_report(tmp_path / "plain", "eval_accuracy", True, {"task_name": "sst2"})


def test_the_plot_command_draws_runs_and_names_a_folder_without_diagnostics(tmp_path, capsys):
    runs = [write_summary(tmp_path / f"run{i}", i, 1e-3, [0.1, 0.2, 0.4]) for i in "AB"]
    figure = tmp_path / "dynamics.png"
    assert dynamics_cli.main(["plot", *map(str, runs), "--out", str(figure)]) == 0
    assert figure.stat().st_size > 10_000
    (tmp_path / "bare").mkdir()
    assert dynamics_cli.main(["plot", str(runs[0]), str(tmp_path / "bare"), "--out", str(figure)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bare" in err and "--lora_diagnostics_steps" in err
