"""A killed run, run again with the same command, resumes from its newest complete checkpoint and ends exactly where an
uninterrupted run ends: the same adapter (within 1e-6), one evaluation per step, every attempt recorded. Also under
run_glue.py's default length-grouped sampler with dropout on, across epochs; also when the newest checkpoint was cut
short by the kill; also when a SIGTERM, not a SIGKILL, stops it."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
KILLER = """
import os, runpy, signal, sys
from transformers import TrainerCallback
import lorakit.training.trainer

class Kill(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == {step}:
            os.kill(os.getpid(), signal.{signal})

original = lorakit.training.trainer.LoraTrainer.__init__
def with_kill(self, *args, **kwargs):
    original(self, *args, **kwargs)
    self.add_callback(Kill())
lorakit.training.trainer.LoraTrainer.__init__ = with_kill
sys.argv = [{script!r}, *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def run(script: str, argv: list[str], kill_at: int | None = None, how: str = "SIGKILL") -> subprocess.CompletedProcess:
    """`script` with `argv` in a fresh process; with `kill_at`, the process sends itself `how` at that step's end."""
    code = ["-c", KILLER.format(step=kill_at, signal=how, script=str(ROOT / script))] if kill_at else [script]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, *code, *argv], cwd=ROOT, capture_output=True, text=True, env=env)


def adapter(folder: Path) -> dict:
    return load_file(folder / "adapter_model.safetensors")


def assert_same_adapter(ours: Path, reference: Path) -> None:
    mine, theirs = adapter(ours), adapter(reference)
    assert mine.keys() == theirs.keys()
    for name in theirs:
        assert (mine[name] - theirs[name]).abs().max().item() <= 1e-6, name


def metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def assert_resumed_record(folder: Path, reference: Path, resumed_from: int) -> None:
    """One evaluation per step, the same steps as the uninterrupted run's, both attempts recorded."""
    record, whole = metrics(folder), metrics(reference)
    steps = [row["step"] for row in record["evaluations"]]
    assert steps == sorted(set(steps)) == [row["step"] for row in whole["evaluations"]]
    first, second = record["attempts"]
    assert first["status"] == "interrupted" and second["status"] == "done" and record["status"] == "done"
    assert second["resumed_from_step"] == resumed_from
    assert record["wall_time_s"] == pytest.approx(first["wall_time_s"] + second["wall_time_s"], abs=0.2)


def test_a_killed_glue_run_resumes_exactly_under_the_length_grouped_sampler(tiny_bert_dir, tiny_glue_dir, tmp_path):
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--glue_dir", str(tiny_glue_dir)]
    argv += ["--per_device_train_batch_size", "4", "--max_steps", "30", "--learning_rate", "5e-3"]  # 5 epochs
    argv += ["--save_strategy", "steps", "--save_steps", "10", "--eval_strategy", "steps", "--eval_steps", "7"]
    whole = run("run_glue.py", [*argv, "--output_dir", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-2000:]

    killed = run("run_glue.py", [*argv, "--output_dir", str(tmp_path / "killed")], kill_at=25)
    assert killed.returncode == -signal.SIGKILL
    assert metrics(tmp_path / "killed")["status"] == "running"  # as the OOM killer leaves it
    shutil.copytree(tmp_path / "killed", tmp_path / "truncated")

    again = run("run_glue.py", [*argv, "--output_dir", str(tmp_path / "killed")])
    assert again.returncode == 0, again.stderr[-2000:]
    assert_same_adapter(tmp_path / "killed", tmp_path / "whole")
    assert_resumed_record(tmp_path / "killed", tmp_path / "whole", resumed_from=20)

    newest = tmp_path / "truncated" / "checkpoint-20" / "adapter_model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])  # the kill cut the newest checkpoint short
    fallback = run("run_glue.py", [*argv, "--output_dir", str(tmp_path / "truncated")])
    assert fallback.returncode == 0, fallback.stderr[-2000:]
    assert_same_adapter(tmp_path / "truncated", tmp_path / "whole")
    assert_resumed_record(tmp_path / "truncated", tmp_path / "whole", resumed_from=10)


def test_a_terminated_lm_run_records_it_and_resumes_exactly(tiny_llama_dir, tiny_corpus_dir, tmp_path):
    argv = ["--model_name_or_path", str(tiny_llama_dir), "--task_name", "text", "--data_dir", str(tiny_corpus_dir)]
    argv += ["--block_size", "64", "--max_steps", "24", "--learning_rate", "5e-3", "--max_eval_samples", "4"]
    argv += ["--save_strategy", "steps", "--save_steps", "8", "--eval_strategy", "steps", "--eval_steps", "6"]
    whole = run("run_llm.py", [*argv, "--output_dir", str(tmp_path / "whole")])
    assert whole.returncode == 0, whole.stderr[-2000:]

    stopped = run("run_llm.py", [*argv, "--output_dir", str(tmp_path / "stopped")], kill_at=20, how="SIGTERM")
    assert stopped.returncode == 128 + signal.SIGTERM
    said = "run_llm.py: interrupted by SIGTERM; run the same command again to resume"
    assert said in stopped.stderr.splitlines()
    assert metrics(tmp_path / "stopped")["status"] == "interrupted"

    again = run("run_llm.py", [*argv, "--output_dir", str(tmp_path / "stopped")])
    assert again.returncode == 0, again.stderr[-2000:]
    assert_same_adapter(tmp_path / "stopped", tmp_path / "whole")
    assert_resumed_record(tmp_path / "stopped", tmp_path / "whole", resumed_from=16)
    assert metrics(tmp_path / "stopped")["final"] == pytest.approx(metrics(tmp_path / "whole")["final"], rel=1e-6)

    finished = run("run_llm.py", [*argv, "--output_dir", str(tmp_path / "stopped")])
    assert finished.returncode == 0 and "holds a finished run (done)" in finished.stdout
    assert len(metrics(tmp_path / "stopped")["attempts"]) == 2  # nothing ran


def test_a_run_that_fails_after_loading_is_recorded_as_failed_with_one_line(tiny_bert_dir, tiny_glue_dir, tmp_path):
    crashing = KILLER.replace("os.kill(os.getpid(), signal.{signal})", "raise RuntimeError('disk full')")
    code = ["-c", crashing.format(step=3, script=str(ROOT / "run_glue.py"))]
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--glue_dir", str(tiny_glue_dir)]
    argv += ["--output_dir", str(tmp_path / "crash"), "--max_steps", "6"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, *code, *argv], cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 1
    assert (
        f"run_glue.py: error: RuntimeError: disk full (recorded in {tmp_path / 'crash' / 'metrics.json'})"
        in done.stderr.splitlines()
    )
    assert "Traceback" not in done.stderr
    record = metrics(tmp_path / "crash")
    assert record["status"] == "failed" and record["error"] == "RuntimeError: disk full"
    assert "Traceback" in record["traceback"] and record["attempts"][-1]["status"] == "failed"
