"""Packed sweeps (issue 6): `--pack K` gives the unpacked sweep's results table; an interrupted pack resumes."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import lorakit.sweeps.__main__ as cli
from lorakit.core.errors import ConfigError
from lorakit.sweeps.spec import load_sweep
from lorakit.sweeps.worker import read_attempts, run_job
from tests.test_sweeps import write_sweep

PROJECT = Path(__file__).resolve().parents[1]
COMPARED = ["learning_rate", "lora_init", "seed", "status"]
NUMBERS = ["final_eval_accuracy", "final_eval_loss"]


def tiny_sweep(folder, model, glue_dir, base_changes=None, **changes) -> Path:
    spec = load_sweep(write_sweep(folder, model, glue_dir))
    base = {**spec.base, "lora_dropout": 0.0, "max_steps": 8, "per_device_train_batch_size": 4, **(base_changes or {})}
    return write_sweep(folder, model, glue_dir, base=base, **changes)


def test_a_packed_sweep_gives_the_unpacked_table(tmp_path, no_dropout_bert, tiny_glue_dir, capsys):
    grid = {"learning_rate": [1e-2], "lora_init": ["A", "B"], "seed": [0, 1]}  # lr mixes: test_packed_glue
    packed = tiny_sweep(tmp_path / "packed", no_dropout_bert, tiny_glue_dir, pack=4, grid=grid)
    assert cli.main(["run", str(packed), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("# pack of 2: ") == 2  # one pack per seed, though 4 would fit
    unpacked = tiny_sweep(tmp_path / "single", no_dropout_bert, tiny_glue_dir, grid=grid)
    assert cli.main(["run", str(packed), "--workers", "1"]) == 0
    assert cli.main(["run", str(unpacked), "--workers", "2"]) == 0
    ours = pd.read_csv(tmp_path / "packed" / "out" / "results.csv").sort_values(COMPARED[:3], ignore_index=True)
    theirs = pd.read_csv(tmp_path / "single" / "out" / "results.csv").sort_values(COMPARED[:3], ignore_index=True)
    pd.testing.assert_frame_equal(ours[COMPARED], theirs[COMPARED])
    pd.testing.assert_frame_equal(ours[NUMBERS], theirs[NUMBERS], rtol=1e-5)
    assert (ours["status"] == "done").all() and (ours["attempts"] == 1).all()
    for run_dir in ours["run_dir"]:
        attempt = json.loads((Path(run_dir) / "attempts.json").read_text())[-1]
        assert len(attempt["pack"]) == 2 and (Path(run_dir) / "adapter_model.safetensors").is_file()
    assert cli.main(["run", str(packed), "--workers", "1"]) == 0  # nothing left to run: no new attempt
    assert (pd.read_csv(tmp_path / "packed" / "out" / "results.csv")["attempts"] == 1).all()


def test_a_bad_pack_size_or_fp16_is_refused_and_peft_schemes_run_alone(tmp_path, tiny_bert_dir, tiny_glue_dir, capsys):
    path = tiny_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir)
    assert cli.main(["run", str(path), "--dry-run", "--pack", "0"]) == 2
    assert "--pack: pack must be a positive integer" in capsys.readouterr().err
    sweep = load_sweep(tiny_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir, base_changes={"fp16": True}))
    with pytest.raises(ConfigError, match="trains in fp16"):
        sweep.jobs(sweep.points(), 4)
    grid = {"learning_rate": [1e-3, 1e-2], "lora_init": ["A", "B", "gaussian"]}
    sweep = load_sweep(tiny_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir, grid=grid))
    assert sorted(len(job.points) for job in sweep.jobs(sweep.points(), 8)) == [1, 1, 4]


def test_a_pack_with_a_member_finished_elsewhere_is_left_for_the_next_run(tmp_path):
    members = [tmp_path / "a", tmp_path / "b"]
    members[0].mkdir()
    (members[0] / "metrics.json").write_text(json.dumps({"status": "done"}))
    command = [sys.executable, "-c", "raise SystemExit(7)"]
    assert run_job(members, command) is None  # not run: nothing finished is redone
    assert read_attempts(members[1]) == [] and not (members[1] / "run.log").exists()


def test_a_killed_pack_resumes_from_its_checkpoint(tmp_path, no_dropout_bert, tiny_glue_dir):
    slow = {"max_steps": 240, "save_strategy": "steps", "save_steps": 40, "logging_steps": 40}
    path = tiny_sweep(tmp_path, no_dropout_bert, tiny_glue_dir, slow, pack=2, grid={"learning_rate": [1e-3, 4e-3]})
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    process = subprocess.Popen([sys.executable, "-m", "lorakit.sweeps", "run", str(path)], cwd=PROJECT, env=env)
    packs = tmp_path / "out" / "packs"
    deadline = time.monotonic() + 120
    while not list(packs.glob("*/checkpoint-*/trainer_state.json")):
        assert time.monotonic() < deadline and process.poll() is None, "no checkpoint appeared"
        time.sleep(0.2)
    for pid in subprocess.run(["pgrep", "-f", str(packs)], capture_output=True, text=True).stdout.split():
        os.kill(int(pid), signal.SIGKILL)  # the pack and its worker die part-way: the attempt stays unfinished
    process.wait(timeout=60)
    assert cli.main(["run", str(path)]) == 0
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table["status"]) == ["done", "done"] and list(table["attempts"]) == [2, 2]
    for run_dir in table["run_dir"]:
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
        assert "/checkpoint-" in metrics["resumed_from"] and metrics["final"]["eval_loss"] < 0.7


def test_a_resumed_pack_equals_its_resumed_single_runs(tmp_path, no_dropout_bert, tiny_glue_dir):
    """Resuming is not bit-exact even for one run (the Trainer reloads the random state after drawing the first
    resumed batch), so the reference is each configuration's single run resumed from the same step."""
    from lorakit.runs.pack import run_pack
    from run_glue import main as run_single

    common = ["--model_name_or_path", str(no_dropout_bert), "--glue_dir", str(tiny_glue_dir), "--task_name", "sst2"]
    common += ["--lora_dropout", "0", "--max_steps", "60", "--per_device_train_batch_size", "4", "--seed", "0"]
    common += ["--save_strategy", "steps", "--save_steps", "30", "--logging_steps", "30"]
    lrs = ["1e-3", "4e-3"]

    def resumed(folder: Path, checkpoint: Path) -> list[str]:
        (folder / checkpoint.name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(checkpoint, folder / checkpoint.name)
        return ["--resume_from_checkpoint", str(folder / checkpoint.name)]

    finals = {}
    for lr in lrs:
        first, second = tmp_path / f"single_{lr}", tmp_path / f"again_{lr}"
        assert run_single([*common, "--learning_rate", lr, "--output_dir", str(first)]) == 0
        again = resumed(second, first / "checkpoint-30")
        assert run_single([*common, "--learning_rate", lr, "--output_dir", str(second), *again]) == 0
        finals[lr] = json.loads((second / "metrics.json").read_text())["final"]["eval_loss"]
    members = [[*common, "--learning_rate", lr, "--output_dir", str(tmp_path / f"pack_{lr}")] for lr in lrs]
    assert run_pack("glue", members, str(tmp_path / "pack")) == 0
    again = resumed(tmp_path / "pack_again", tmp_path / "pack" / "checkpoint-30")
    members = [
        [*common, "--learning_rate", lr, "--output_dir", str(tmp_path / f"pack_again_{lr}"), *again] for lr in lrs
    ]
    assert run_pack("glue", members, str(tmp_path / "pack_again")) == 0
    for lr in lrs:
        metrics = json.loads((tmp_path / f"pack_again_{lr}" / "metrics.json").read_text())
        assert metrics["final"]["eval_loss"] == pytest.approx(finals[lr], rel=1e-5)
