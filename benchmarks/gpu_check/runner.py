"""Running a plan: each step in its own process group under its timeout and the run's budget, each result appended
to `results.jsonl` (and flushed to disk) the moment it is known, so a run stopped from outside keeps what it
measured. A step's process group stays in the caller's session, so nothing outlives the command that ran the check;
SIGTERM to the check kills the step in flight before the check ends."""

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from benchmarks.gpu_check.plan import Step

ROOT = Path(__file__).resolve().parents[2]


class Record:
    """The output folder: `results.jsonl` (one JSON object a line) and `log.txt` (every step's output)."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.results = open(out / "results.jsonl", "a")
        self.log = open(out / "log.txt", "a")

    def result(self, line: dict) -> None:
        self.results.write(json.dumps(line) + "\n")
        self.results.flush()
        os.fsync(self.results.fileno())

    def note(self, text: str) -> None:
        self.log.write(text if text.endswith("\n") else text + "\n")
        self.log.flush()


def last_json(stdout: str) -> dict | None:
    """The last line of `stdout` that is a JSON object (the step's result), or None."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def junit_tests(path: Path) -> list[dict]:
    """Every test case of pytest's JUnit report: its id, outcome, seconds and the first line of any message."""
    if not path.is_file():
        return []
    try:
        cases = list(ElementTree.parse(path).iter("testcase"))
    except ElementTree.ParseError:
        return []
    tests = []
    for case in cases:
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or child.text or "").strip().splitlines()[:1]
                message = message[0] if message else ""
        name = f"{case.get('classname', '')}::{case.get('name', '')}"
        tests.append({"test": name, "outcome": outcome, "seconds": float(case.get("time", 0)), "message": message})
    return tests


class Stopped(Exception):
    """The check itself got SIGTERM: the step in flight was killed, and the check ends."""


def run_process(step: Step, timeout: float, record: Record) -> tuple[str, str, float]:
    """Run `step` as `python *argv` in the project root, in a process group of its own: its status (ok, failed,
    timeout), stdout, and seconds. Its stderr streams into the log; at the timeout (or a SIGTERM to the check) the
    whole group is killed."""
    record.note(f"\n===== {step.name}: {' '.join([sys.executable, *step.argv])} (timeout {timeout:.0f} s)")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, *step.argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=record.log, env=env,
        encoding="utf-8", errors="replace", process_group=0,
    )  # fmt: skip

    def stop(signum, frame):
        os.killpg(process.pid, signal.SIGKILL)
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        stdout, _ = process.communicate(timeout=timeout)
        status = "ok" if process.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, _ = process.communicate(timeout=30)
        status = "timeout"
    finally:
        signal.signal(signal.SIGTERM, previous)
    record.note(f"----- {step.name} stdout (exit {process.returncode}):\n{stdout}")
    return status, stdout, round(time.monotonic() - start, 1)


def run_step(step: Step, left_s: float, statuses: dict, record: Record) -> dict:
    """Run one step unless a step it needs did not succeed or too little of the budget is left; its results line."""
    line = {"group": step.group, "case": step.case}
    missing = [name for name in step.needs if statuses.get(name) != "ok"]
    if missing:
        return {**line, "status": "skipped", "reason": f"needs {', '.join(missing)}"}
    if left_s < step.min_s:
        return {**line, "status": "skipped", "reason": f"out of time ({left_s:.0f} s of the budget left)"}
    status, stdout, seconds = run_process(step, min(step.timeout_s, left_s), record)
    line.update(status=status, wall_s=seconds)
    if status == "timeout":
        line["reason"] = f"killed after {seconds:.0f} s"
    if step.reads == "junit":
        tests = junit_tests(Path(step.argv[-1]))
        for test in tests:
            record.result({"group": step.group, "case": test.pop("test"), **test})
        counts = {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error", "skipped")}
        return {**line, "result": counts}
    result = last_json(stdout)
    if status == "ok" and result is None:
        line.update(status="failed", reason="no JSON result line on stdout")
    elif result is not None:
        line["result"] = result  # after a timeout: the interim line a case prints before it profiles
    return line


def run_plan(steps: list[Step], budget_s: float, record: Record) -> list[dict]:
    """Every step in order within `budget_s` seconds in all; returns (and records) each step's line. A SIGTERM ends
    the run after recording the step it cut short as stopped."""
    deadline = time.monotonic() + budget_s
    statuses, lines = {}, []
    for step in steps:
        try:
            line = run_step(step, deadline - time.monotonic(), statuses, record)
        except Stopped:
            record.result({"group": step.group, "case": step.case, "status": "stopped", "reason": "SIGTERM"})
            raise SystemExit(128 + signal.SIGTERM) from None
        statuses[step.name] = line["status"]
        record.result(line)
        lines.append(line)
        reason = f" ({line['reason']})" if "reason" in line else ""
        print(f"gpu_check: {step.name}: {line['status']}{reason}", file=sys.stderr, flush=True)
    return lines
