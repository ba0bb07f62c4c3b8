"""Sweeps: grid expansion and validation, resumable local runs (SIGKILL part-way), failure isolation, the report."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import lorakit.sweeps.__main__ as cli
from lorakit.core.errors import ConfigError
from lorakit.sweeps.report import write_report
from lorakit.sweeps.spec import load_sweep, validate
from lorakit.sweeps.worker import acquire, is_locked, lock_path, read_attempts, read_lock, release, run_point
from tests.conftest import write_tsv

PROJECT = Path(__file__).resolve().parents[1]
RECIPES = sorted((PROJECT / "launch" / "sweeps").glob("*.yaml"))
COMPARED = ["run_id", "learning_rate", "lora_init", "status", "final_eval_accuracy", "final_eval_loss"]


def write_sweep(folder: Path, tiny_bert_dir, glue_dir, **changes) -> Path:
    spec = {
        "name": "tiny",
        "runner": "run_glue.py",
        "output_root": str(folder / "out"),
        "base": {
            "model_name_or_path": str(tiny_bert_dir),
            "task_name": "sst2",
            "glue_dir": str(glue_dir),
            "max_steps": 6,
            "per_device_train_batch_size": 8,
            "logging_steps": 2,
            "seed": 0,
        },  # fmt: skip
        "grid": {"learning_rate": [1e-3, 1e-2], "lora_init": ["A", "B"]},
        "local": {"workers": 2},
        **changes,
    }
    path = folder / "sweep.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


def sweep_process(path: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    return subprocess.Popen([sys.executable, "-m", "lorakit.sweeps", "run", str(path)], cwd=PROJECT, env=env)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_sweep_validates(recipe, capsys):
    assert cli.main(["run", str(recipe), "--dry-run"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert len(commands) == len(load_sweep(recipe).points()) > 1
    header = recipe.read_text().split("\n")[0:6]
    assert any(f"python -m sweeps run launch/sweeps/{recipe.name}" in line for line in header)


def test_a_misspelt_key_fails_validation(tmp_path, tiny_bert_dir, tiny_glue_dir, capsys):
    bad_grid = write_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir, grid={"learning_rte": [1e-3]})
    assert cli.main(["run", str(bad_grid), "--dry-run"]) == 2
    assert "learning_rte" in capsys.readouterr().err
    bad_top = write_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir, metirc="eval_accuracy")
    with pytest.raises(ConfigError, match="unknown key.*metirc"):
        load_sweep(bad_top)


def test_points_have_stable_ids_and_directories(tmp_path, tiny_bert_dir, tiny_glue_dir):
    path = write_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir)
    first, second = validate(load_sweep(path)), validate(load_sweep(path))
    assert [p.run_dir for p in first] == [p.run_dir for p in second] and len({p.run_id for p in first}) == 4
    assert first[0].run_dir.name.startswith("lr0.001_initA_")


def test_sigkill_part_way_then_restart_finishes_every_run_once(tmp_path, tiny_bert_dir, tiny_glue_dir):
    killed = write_sweep(tmp_path / "killed", tiny_bert_dir, tiny_glue_dir, local={"workers": 1})
    proc = sweep_process(killed)
    results = tmp_path / "killed" / "out" / "results.csv"
    deadline = time.time() + 120
    while not (results.is_file() and len(pd.read_csv(results)) >= 1) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(pd.read_csv(results)) < 4  # killed part-way
    restart = sweep_process(killed)
    assert restart.wait(timeout=300) == 0

    clean = write_sweep(tmp_path / "clean", tiny_bert_dir, tiny_glue_dir)
    assert sweep_process(clean).wait(timeout=300) == 0
    after_kill = pd.read_csv(results).sort_values("run_id")
    uninterrupted = pd.read_csv(tmp_path / "clean" / "out" / "results.csv").sort_values("run_id")
    assert after_kill["run_id"].is_unique and len(after_kill) == 4 and set(after_kill["status"]) == {"done"}
    assert (after_kill["attempts"] == 1).all()  # the run in flight at the kill finished in its orphaned worker
    pd.testing.assert_frame_equal(
        after_kill[COMPARED].reset_index(drop=True), uninterrupted[COMPARED].reset_index(drop=True)
    )


def test_a_failing_point_is_recorded_and_the_rest_complete(tmp_path, tiny_bert_dir, tiny_glue_dir, capsys):
    broken = tmp_path / "broken"
    (broken / "SST-2").mkdir(parents=True)
    write_tsv(broken / "SST-2" / "train.tsv", ["text", "label"], [["good", "1"]])  # wrong column name
    write_tsv(broken / "SST-2" / "dev.tsv", ["text", "label"], [["bad", "0"]])
    path = write_sweep(
        tmp_path, tiny_bert_dir, tiny_glue_dir,
        grid={"glue_dir": [str(tiny_glue_dir), str(broken)], "lora_init": ["A", "B"]},
    )  # fmt: skip
    assert cli.main(["run", str(path)]) == 1
    out = capsys.readouterr().out
    assert "4 runs: 2 done, 2 failed" in out and "missing column(s) 'sentence'" in out
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(results["status"]) == ["done", "done", "failed", "failed"]
    assert set(results.loc[results["status"] == "failed", "exit_code"]) == {2}
    assert cli.main(["status", str(path)]) == 0 and "2 failed" in capsys.readouterr().out
    assert cli.main(["run", str(path), "--retry-failed"]) == 1  # retried, and still failing
    assert (pd.read_csv(tmp_path / "out" / "results.csv").query("status == 'failed'")["attempts"] == 2).all()


def test_report_summarises_the_rows(tmp_path):
    rows = []
    for init, scores in {
        "A": {1e-3: [0.80, 0.84], 1e-2: [0.90, 0.86]},
        "B": {1e-3: [0.85, 0.87], 1e-2: [None, None]},
    }.items():
        for lr, values in scores.items():
            for seed, value in enumerate(values):
                status = "done" if value is not None else "diverged"
                rows.append({"run_id": f"{init}{lr}{seed}", "lora_init": init, "learning_rate": lr, "seed": seed,
                             "status": status, "final_eval_accuracy": value})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    paths = write_report(tmp_path, "eval_accuracy", True, {"task_name": "sst2"})
    summary = pd.read_csv(paths["summary"]).set_index(["lora_init", "learning_rate"])
    assert summary.loc[("A", 1e-2), "mean"] == pytest.approx(0.88)
    assert summary.loc[("A", 1e-2), "std"] == pytest.approx(pd.Series([0.90, 0.86]).std())
    assert summary.loc[("B", 1e-2), "diverged"] == 2 and summary.loc[("B", 1e-2), "seeds"] == 0
    best = pd.read_csv(paths["best"]).set_index("lora_init")
    assert best.loc["A", "best_lr"] == 1e-2 and best.loc["B", "best_lr"] == 1e-3
    assert best.loc["A", "gap_A_minus_B"] == pytest.approx(0.88 - 0.86)
    assert paths["metric_vs_lr"].stat().st_size > 10_000 and "ratio_lr_heatmap" not in paths


def test_ratio_heatmap_when_the_sweep_has_ratios(tmp_path):
    rows = [
        {
            "run_id": f"{i}{r}{lr}",
            "lora_init": i,
            "loraplus_lr_ratio": r,
            "learning_rate": lr,
            "status": "done",
            "final_eval_accuracy": 0.5 + 0.01 * r + lr,
        }  # fmt: skip
        for i in "AB"
        for r in (1, 4, 16)
        for lr in (1e-4, 1e-3)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    paths = write_report(tmp_path, "eval_accuracy", True, {})
    assert paths["ratio_lr_heatmap"].is_file()
    assert json.loads(pd.read_csv(paths["summary"]).to_json())["mean"]


def test_worker_records_the_attempt_and_the_runners_own_error(tmp_path):
    command = [sys.executable, "-c", "import sys; print('resuming from checkpoint-12'); sys.exit(3)"]
    assert run_point(tmp_path, command) == 3  # the runner itself resumes (lorakit.core.run_folder)
    [attempt] = read_attempts(tmp_path)
    assert attempt["command"] == command
    assert attempt["exit_code"] == 3 and "checkpoint-12" in attempt["error"] and not attempt["interrupted"]
    assert not is_locked(tmp_path)


def test_a_held_lock_keeps_a_second_worker_out_and_a_dead_holders_file_does_not(tmp_path):
    command = [sys.executable, "-c", "pass"]
    held = acquire(tmp_path)
    assert is_locked(tmp_path) and read_lock(tmp_path)["pid"] == os.getpid()
    assert run_point(tmp_path, command) is None and read_attempts(tmp_path) == []
    release(held)  # as when the holder dies: the kernel drops its flock, the file stays
    assert lock_path(tmp_path).exists() and not is_locked(tmp_path)
    assert run_point(tmp_path, command) == 0 and len(read_attempts(tmp_path)) == 1


def test_a_worker_skips_a_point_that_finished_while_it_waited(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "done"}))
    assert run_point(tmp_path, [sys.executable, "-c", "raise SystemExit(5)"]) == 0
    assert read_attempts(tmp_path) == []


def test_shell_wrapper_is_the_python_command(tmp_path, tiny_bert_dir, tiny_glue_dir):
    path = write_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir)
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(
        [str(PROJECT / "launch" / "sweep.sh"), "status", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("4 runs: 4 pending")
