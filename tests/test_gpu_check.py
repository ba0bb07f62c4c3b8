"""The prepared GPU check (benchmarks/gpu_check): its CPU smoke plan runs every step end to end, a step that hangs is
killed while the rest go on, and its tables judge each target against the stock stack of the same run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.common import KernelTime
from benchmarks.gpu_check import plan, runner, tables

ROOT = Path(__file__).resolve().parents[1]
TEXT = {"capture_output": True, "text": True}
without_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="what a machine without a GPU does")


def results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


@without_gpu
def test_the_smoke_plan_runs_every_step_through_the_device_script_and_tables_show_them(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", str(out), "--smoke"], cwd=ROOT, env=env, **TEXT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = results(out)
    assert lines[0]["group"] == "environment" and lines[0]["mode"] == "smoke"
    steps = {f"{x['group']}/{x['case']}": x for x in lines if "status" in x}
    expected = [step.name for step in plan.plan(plan.SMOKE, tmp_path, out)]
    assert list(steps) == expected and all(steps[name]["status"] == "ok" for name in expected)
    for case in ("stock", "ours", "pack1", "pack2"):
        result = steps[f"roberta/{case}"]["result"]
        assert result["samples_per_s"] > 0 and result["kernels_per_step"] == 0 and result["step_ms"] > 0  # profiled
    assert steps["qlora/pack2"]["result"]["configurations"] == 2 and "step_ms" in steps["qlora/stock"]["result"]
    probe = steps["probe/packs"]["result"]
    assert probe["peaks"]["2"] > probe["peaks"]["1"] > 0 and probe["device_kind"] == "cpu" and probe["fits_a10"] > 1
    tests = [x for x in lines if x["group"] == "gpu_tests" and "outcome" in x]
    assert len(tests) >= 7 and all(t["outcome"] == "skipped" for t in tests)  # no CUDA here
    assert steps["gpu_tests/pytest"]["result"]["skipped"] == len(tests)
    log = (out / "log.txt").read_text()
    assert all(f"===== {name}:" in log for name in expected)

    document = tmp_path / "benchmarks.md"
    document.write_text("# Benchmarks\n")
    shown = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "table", str(out), "--document", document],
                           cwd=ROOT, **TEXT)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    text = document.read_text()
    assert text.startswith("# Benchmarks\n\n## GPU check (issue 15)") and shown.stdout.strip() in text
    assert "| pack2 |" in text and "| tests.test_gpu::test_fp16_run_on_cuda[A] | skipped" in text
    assert "Pack sizes it picks:" in text


@without_gpu
def test_without_a_gpu_the_gpu_plan_stops_with_one_line_before_any_step(tmp_path):
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "run", "--out", str(tmp_path / "o")],
                          cwd=ROOT, **TEXT)  # fmt: skip
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("gpu_check: error: ")
    assert not (tmp_path / "o").exists()


def python_step(case: str, code: str, timeout_s: float = 30, **kwargs) -> plan.Step:
    return plan.Step("x", case, ("-c", code), timeout_s=timeout_s, min_s=1, **kwargs)


def test_a_hung_step_is_killed_at_its_timeout_and_the_next_steps_still_run(tmp_path):
    interim_then_hang = "import time; print('{\"v\": 0}', flush=True); time.sleep(60)"
    steps = [
        python_step("hangs", interim_then_hang, timeout_s=2),
        python_step("after", "print('noise'); print('{\"v\": 1}'); print(b'\\xff'.decode('latin-1'))"),
        python_step("needs_hung", "pass", needs=("x/hangs",)),
        python_step("crashes", "raise SystemExit(3)"),
        python_step("silent", "pass"),
        python_step("bytes", "import sys; sys.stdout.buffer.write(b'\\xff\\n{\"v\": 2}\\n')"),
    ]
    lines = runner.run_plan(steps, budget_s=60, record=runner.Record(tmp_path))
    assert [x["status"] for x in lines] == ["timeout", "ok", "skipped", "failed", "failed", "ok"]
    assert lines[0]["wall_s"] < 10 and lines[0]["result"] == {"v": 0}  # its interim line survives the kill
    assert lines[1]["result"] == {"v": 1} and lines[5]["result"] == {"v": 2}  # bytes that are not UTF-8 are fine
    assert lines[2]["reason"] == "needs x/hangs" and lines[4]["reason"] == "no JSON result line on stdout"
    assert results(tmp_path) == lines  # each line was on disk as soon as it was known


def test_steps_left_without_budget_are_recorded_as_skipped(tmp_path):
    steps = [python_step("slow", "import time; time.sleep(60)", timeout_s=100)]
    steps.append(plan.Step("x", "late", ("-c", "print('{}')"), timeout_s=100, min_s=5))
    lines = runner.run_plan(steps, budget_s=3, record=runner.Record(tmp_path))
    assert lines[0]["status"] == "timeout" and lines[0]["wall_s"] < 10  # cut at the budget, not its own 100 s
    assert lines[1]["status"] == "skipped" and lines[1]["reason"].startswith("out of time")


def test_only_keeps_the_named_steps_and_what_they_need(tmp_path):
    steps = plan.plan(plan.GPU, tmp_path, tmp_path)
    chosen = [s.name for s in plan.select(steps, ["qlora/pack8", "roberta/stock", "gpu_tests"])]
    assert chosen == ["roberta/stock", "qlora/prepare", "qlora/pack8", "gpu_tests/pytest"]
    assert [s.name for s in plan.select(steps, None)] == [s.name for s in steps]


def row(group: str, case: str, status: str = "ok", **result) -> dict:
    return {"group": group, "case": case, "status": status, "wall_s": 1.0, "result": result}


def test_tables_judge_each_target_against_the_stock_run_of_the_same_check():
    gib = 2**30
    lines = [
        {"group": "environment", "mode": "gpu", "gpu": "NVIDIA H200, 143771 MiB", "date": "2026-11-29"},
        row("roberta", "stock", samples_per_s=40.0, peak_gib=7.0, reserved_gib=7.5, gpu_busy=0.3),
        row("roberta", "ours", samples_per_s=56.0, peak_gib=6.9, reserved_gib=7.4),
        row("roberta", "pack22", samples_per_s=640.0, peak_gib=20.0, reserved_gib=21.0, gpu_busy=0.9),
        {"group": "roberta", "case": "pack4", "status": "timeout", "reason": "killed after 60 s"},
        row("roberta", "pack22_compile", "timeout", samples_per_s=900.0, reserved_gib=20.0, interim=True),
        row("qlora", "stock", tokens_per_s=850, peak_gib=5.0),
        row("qlora", "pack8", tokens_per_s=3000, peak_gib=23.0),
        row("probe", "packs", peaks={"1": 8 * gib, "2": 9 * gib}, measured_by="CUDA allocator",
            device_kind="NVIDIA H200", device_bytes=140 * gib, fits_a10=13, fits_device=119),
    ]  # fmt: skip
    text = tables.document(lines)
    assert "- pack22: ≥ 15× stock (goal 30×): **met** (16.00×)" in text
    assert "- ours: ≥ 1.5× stock: **NOT MET** (1.40×)" in text
    assert "- pack8: ≥ 4× stock (goal 6×) within 22.5 GiB: **NOT MET** (3.53×, over the A10 budget)" in text
    assert "| stock | 40.0 | 1.00 | 7.00 / 7.50 |" in text and "30% (launch-bound)" in text
    assert "90% (compute-bound)" in text and "| pack4 | timeout: killed after 60 s |" in text
    assert "| pack22_compile (cut off while profiling) | 900.0 | 22.50 |" in text  # its interim rate
    assert "| 22 | 29.00 | 21.00 |" in text  # the probe's line, 8 GiB + 21 × 1 GiB, beside the measured pack
    assert "13 within an A10's 22.5 GiB; 119 within this device's 140 GiB" in text
    assert "The gpu tests did not run." in text and "- roberta/pack4: timeout (killed after 60 s)" in text


@pytest.mark.parametrize(
    "stock, expected",
    [
        (row("roberta", "stock", "failed", samples_per_s=40.0), "- pack22: ≥ 15× stock (goal 30×): not measured"),
        (row("roberta", "stock", samples_per_s=0.0), "- pack22: ≥ 15× stock (goal 30×): not measured"),
        (row("roberta", "stock", peak_gib=1.0), "| stock | ok: see log.txt |"),
        (row("roberta", "stock", samples_per_s=float("nan")), "| stock | ok: see log.txt |"),
    ],
)
def test_tables_take_no_baseline_from_a_stock_case_that_did_not_measure(stock, expected):
    text = tables.document([stock, row("roberta", "pack22", samples_per_s=640.0)])
    assert expected in text and "| pack22 | 640.0 | — |" in text


def test_tables_of_an_empty_or_cut_results_file(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"group": "roberta", "case": "stock", "sta')
    text = tables.document(tables.read_results(tmp_path / "results.jsonl"))
    assert "- pack22: ≥ 15× stock (goal 30×): not measured" in text and "did not measure a pack of 1" in text
    qlora = tables.document([row("qlora", "stock", tokens_per_s=850), row("qlora", "pack8", tokens_per_s=4000)])
    assert "- pack8: ≥ 4× stock (goal 6×) within 22.5 GiB: 4.71×, peak memory not measured" in qlora


@pytest.mark.skipif(torch.cuda.is_available(), reason="what a machine without a GPU reports")
def test_the_kernel_profile_reports_no_gpu_time_without_a_gpu():
    kernels = KernelTime()
    kernels.start()
    torch.randn(64, 64) @ torch.randn(64, 64)
    figures = kernels.stop(steps=2, step_seconds=0.5)
    assert figures["step_ms"] == 500.0 and figures["kernels_per_step"] == 0 and figures["gpu_busy"] == 0.0
