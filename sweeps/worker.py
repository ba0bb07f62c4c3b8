"""Runs one sweep point under a lock, so no configuration ever runs twice at once, and records each attempt.

    python -m sweeps.worker <run_dir> -- <runner command …>

The lock is ``<run_dir>/.lock`` (created exclusively; holds host, pid and SLURM job id). The worker, not the sweep,
holds it: if the sweep process is killed, its workers finish their runs and record them. ``<run_dir>/attempts.json``
lists every attempt: command, start, end, exit code, the last lines of the log when it failed. A run that left
``checkpoint-*`` folders resumes from the newest.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from finetune.atomic import write_json_atomic

LOG_TAIL_LINES = 20
PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies


def lock_path(run_dir: Path) -> Path:
    return run_dir / ".lock"


def read_lock(run_dir: Path) -> dict | None:
    try:
        return json.loads(lock_path(run_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def lock_is_live(holder: dict) -> bool:
    """Whether the lock's holder still runs: a live pid on this host, or a SLURM job not yet ended."""
    if holder.get("slurm_job_id"):
        done = subprocess.run(["squeue", "-h", "-j", str(holder["slurm_job_id"])], capture_output=True, text=True)
        return done.returncode == 0 and bool(done.stdout.strip())
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: we cannot tell, so we do not take it over
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True


def acquire(run_dir: Path) -> bool:
    """Take the run's lock; a stale one (its holder gone) is taken over. False when a live holder has it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "since": time.time(),
    }
    for _ in range(2):
        try:
            fd = os.open(lock_path(run_dir), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = read_lock(run_dir)
            if holder is None or not lock_is_live(holder):
                lock_path(run_dir).unlink(missing_ok=True)
                continue
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True
    return False


def release(run_dir: Path) -> None:
    holder = read_lock(run_dir)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        lock_path(run_dir).unlink(missing_ok=True)


def read_attempts(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / "attempts.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = [p for p in run_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def log_tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(lines[-LOG_TAIL_LINES:])


def die_with_worker() -> None:
    """In the runner's process (Linux): get SIGTERM when the worker dies, so a stale lock never hides a live run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def run_point(run_dir: str | Path, command: list[str]) -> int | None:
    """Run `command` for the point in `run_dir` if nobody else is running it. Returns its exit code (None: it was
    locked by a live run elsewhere)."""
    run_dir = Path(run_dir)
    if not acquire(run_dir):
        return None
    attempts = read_attempts(run_dir)
    try:
        checkpoint = latest_checkpoint(run_dir)
        command = [*command, "--resume_from_checkpoint", str(checkpoint)] if checkpoint else list(command)
        attempt = {"command": command, "host": socket.gethostname(), "started": time.time(), "exit_code": None}
        attempts.append(attempt)
        write_json_atomic(run_dir / "attempts.json", attempts)
        log = run_dir / "run.log"
        with open(log, "a") as out:
            child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_worker)

            def forward(signum, frame):
                child.send_signal(signum)

            signal.signal(signal.SIGTERM, forward)
            signal.signal(signal.SIGINT, forward)
            code = child.wait()
        attempt.update(exit_code=code, finished=time.time())
        if code != 0:
            attempt["error"] = log_tail(log)
            attempt["interrupted"] = code in (-signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 130)
        write_json_atomic(run_dir / "attempts.json", attempts)
        return code
    finally:
        release(run_dir)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m sweeps.worker <run_dir> -- <command …>", file=sys.stderr)
        return 2
    code = run_point(argv[0], argv[2:])
    return 0 if code is None else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
