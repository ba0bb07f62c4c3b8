"""Sweeps under what befalls them: two `run`s at once, a runner killed alone (the OOM killer), a checkpoint cut short
by that kill, damaged run records, a run folder deleted while its point runs, and planted symbolic links."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd

import lorakit.sweeps.__main__ as cli
from lorakit.sweeps.spec import load_sweep
from lorakit.sweeps.worker import acquire, release, run_point
from tests.test_resume import KILLER
from tests.test_sweeps import PROJECT, write_sweep


def results(path: Path) -> pd.DataFrame:
    return pd.read_csv(path.parent / "out" / "results.csv")


def test_two_runs_of_one_sweep_at_once_both_succeed_and_run_each_point_once(tmp_path, tiny_bert_dir, tiny_glue_dir):
    path = write_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir, local={"workers": 1})
    command = [sys.executable, "-m", "lorakit.sweeps", "run", str(path)]
    both = [subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    codes = [process.wait(timeout=600) for process in both]
    assert codes == [0, 0], [p.stderr.read().decode()[-2000:] for p in both]
    table = results(path)
    assert len(table) == 4 and (table["status"] == "done").all() and (table["attempts"] == 1).all()


def test_a_runner_killed_alone_is_resumed_by_a_plain_run_past_a_cut_checkpoint(
    tmp_path, tiny_bert_dir, tiny_glue_dir, capsys
):
    base = {"model_name_or_path": str(tiny_bert_dir), "task_name": "sst2", "glue_dir": str(tiny_glue_dir)}
    base |= {"save_strategy": "steps", "save_steps": 2, "max_steps": 8, "per_device_train_batch_size": 4}
    path = write_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir, base=base, grid={"learning_rate": [1e-2]})
    [point] = load_sweep(path).points()
    killer = ["-c", KILLER.format(step=5, signal="SIGKILL", script=str(PROJECT / "run_glue.py"))]
    assert run_point(point.run_dir, [sys.executable, *killer, *point.argv()]) == -signal.SIGKILL
    assert cli.main(["status", str(path)]) == 0
    assert "1 runs: 1 interrupted" in capsys.readouterr().out  # a kill by signal, not the runner's own error

    newest = point.run_dir / "checkpoint-4" / "optimizer.pt"
    newest.write_bytes(newest.read_bytes()[:100])  # the kill cut the newest checkpoint short
    assert cli.main(["run", str(path)]) == 0
    metrics = json.loads((point.run_dir / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["attempts"][-1]["resumed_from_step"] == 2
    assert results(path)["attempts"].tolist() == [2]


def fake_point(run_dir: Path, metrics) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    (run_dir / "attempts.json").write_text(json.dumps([{"command": [], "exit_code": 0, "started": 0, "finished": 1}]))


def test_damaged_records_mark_their_point_and_the_report_summarises_the_rest(
    tmp_path, tiny_bert_dir, tiny_glue_dir, capsys
):
    path = write_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir)
    points = load_sweep(path).points()
    for point, accuracy in zip(points[:2], (0.6, 0.7), strict=True):
        fake_point(point.run_dir, {"status": "done", "final": {"eval_accuracy": accuracy, "eval_loss": 0.5}})
    fake_point(points[2].run_dir, [])  # metrics.json holding []
    fake_point(points[3].run_dir, {"status": "done", "final": {"eval_accuracy": "abc"}})  # a string for a number
    assert cli.main(["status", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "4 runs: 1 damaged, 3 done" in shown and "metrics.json is not a JSON object" in shown
    (points[1].run_dir / "attempts.json").write_text(json.dumps([{"exit_code": 1, "error": 5}]))
    assert cli.main(["status", str(path)]) == 0
    shown = capsys.readouterr().out
    assert "4 runs: 2 damaged, 2 done" in shown and "attempt 1's error is a int" in shown
    assert cli.main(["report", str(path)]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["seeds"].sum() == 1 and sorted(summary["mean"].dropna()) == [0.6]


def test_a_lock_outlives_its_deleted_run_folder_and_no_link_is_written_through(tmp_path):
    run_dir = tmp_path / "out" / "runs" / "lr0.001_abc"
    held = acquire(run_dir)  # a live worker holds the point
    for path in sorted(run_dir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    run_dir.rmdir()  # someone deletes the run folder mid-run
    assert run_point(run_dir, [sys.executable, "-c", "pass"]) is None  # still held: not run a second time
    release(held)

    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (run_dir / "run.log").symlink_to(target)  # planted
    assert run_point(run_dir, [sys.executable, "-c", "print('log line')"]) == 0
    assert target.read_text() == "keep me" and not (run_dir / "run.log").is_symlink()
    assert "log line" in (run_dir / "run.log").read_text()


def test_a_point_whose_worker_cannot_start_ends_the_run_instead_of_looping(tmp_path, tiny_bert_dir, tiny_glue_dir):
    path = write_sweep(tmp_path, tiny_bert_dir, tiny_glue_dir, grid={"learning_rate": [1e-2]})
    [point] = load_sweep(path).points()
    locks = tmp_path / "out" / "locks"
    locks.mkdir(parents=True)
    (locks / f"{point.run_dir.name}.lock").symlink_to(tmp_path / "nowhere")  # planted
    done = subprocess.run([sys.executable, "-m", "lorakit.sweeps", "run", str(path)], cwd=PROJECT, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 1 and done.stderr.count("sweeps.worker: error: cannot lock") == 1
    assert not (tmp_path / "nowhere").exists()
