"""Runs one sweep point under a lock, so no configuration ever runs twice at once, and records each attempt.

    python -m sweeps.worker <run_dir> -- <runner command …>

The lock is an exclusive ``flock`` on ``<run_dir>/.lock``, held by the worker for the whole run. The kernel releases
it when the worker dies, however it dies, so a lock is never stale (``flock`` also works on NFSv4 shared folders, as
SLURM clusters use). The file says who holds it (host, pid, SLURM job) for ``status``. The worker, not the sweep,
holds the lock: if the sweep process is killed, its workers finish their runs and record them; the runner gets
SIGTERM if its worker dies, so no run outlives its lock. ``<run_dir>/attempts.json`` lists every attempt: command,
start, end, exit code, and the last lines of the log when it failed. A run that left complete ``checkpoint-*``
folders resumes from the newest.
"""

import ctypes
import fcntl
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
ACQUIRE_WAIT_S = 2.0  # how long a worker retries a held lock (a `status` probe holds it for microseconds)


def lock_path(run_dir: Path) -> Path:
    return run_dir / ".lock"


def read_lock(run_dir: Path) -> dict | None:
    try:
        return json.loads(lock_path(run_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_locked(run_dir: Path) -> bool:
    """Whether a live worker holds the run's lock (probed with a non-blocking shared flock)."""
    try:
        fd = os.open(lock_path(run_dir), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def acquire(run_dir: Path) -> int | None:
    """Take the run's lock and write who holds it; returns the open descriptor that holds it, or None when a live
    worker has it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(run_dir), os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + ACQUIRE_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.05)
    holder = {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job_id": os.environ.get("SLURM_JOB_ID")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({**holder, "since": time.time()}).encode(), 0)
    return fd


def release(fd: int) -> None:
    os.close(fd)  # closing the descriptor drops the flock


def read_attempts(run_dir: Path) -> list[dict]:
    try:
        return json.loads((run_dir / "attempts.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (the Trainer writes trainer_state.json last)."""
    found = [
        p
        for p in run_dir.glob("checkpoint-*")
        if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()
    ]
    return max(found, key=lambda p: int(p.name.split("-")[-1]), default=None)


def finished(run_dir: Path, attempts: list[dict]) -> bool:
    """Done or diverged by its metrics, with a clean last exit."""
    try:
        status = json.loads((run_dir / "metrics.json").read_text()).get("status")
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return status in ("done", "diverged") and (not attempts or attempts[-1].get("exit_code") == 0)


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
    lock = acquire(run_dir)
    if lock is None:
        return None
    attempts = read_attempts(run_dir)
    try:
        if finished(run_dir, attempts):  # finished while this worker was queued (another sweep or array task)
            return 0
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
        release(lock)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m sweeps.worker <run_dir> -- <command …>", file=sys.stderr)
        return 2
    code = run_point(argv[0], argv[2:])
    return 0 if code is None else code if code >= 0 else 128 - code  # killed by signal N: exit 128 + N


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
