"""Runs one sweep point under a lock, so no configuration ever runs twice at once, and records each attempt.

    python -m sweeps.worker <run_dir> -- <runner command …>
    python -m sweeps.worker <run_dir> <run_dir> … -- python -m packing <pack.json>    # a pack: every point locked

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
    return run_job([run_dir], command)


def run_job(run_dirs: list[str | Path], command: list[str]) -> int | None:
    """Run `command` for the points in `run_dirs` (one point, or a pack trained together) if nobody else is running
    any of them: every point's lock is held and every point records the attempt. A single point resumes from its
    newest checkpoint; a pack resumes itself (`python -m packing`). Returns the exit code (None: a point was locked
    by a live run elsewhere)."""
    run_dirs = [Path(d) for d in run_dirs]
    locks = []
    for run_dir in sorted(run_dirs):  # one order for everyone: two overlapping packs never wait on each other
        lock = acquire(run_dir)
        if lock is None:
            for held in locks:
                release(held)
            return None
        locks.append(lock)
    records = {run_dir: read_attempts(run_dir) for run_dir in run_dirs}
    try:
        done = [finished(d, records[d]) for d in run_dirs]
        if any(done):  # finished while queued (another sweep or array task); a part-finished pack is left for the
            return 0 if all(done) else None  # next `run`, which packs the rest anew (nothing finished is redone)
        checkpoint = latest_checkpoint(run_dirs[0]) if len(run_dirs) == 1 else None
        command = [*command, "--resume_from_checkpoint", str(checkpoint)] if checkpoint else list(command)
        attempt = {"command": command, "host": socket.gethostname(), "started": time.time(), "exit_code": None}
        if len(run_dirs) > 1:
            attempt["pack"] = [str(d) for d in run_dirs]
        for run_dir in run_dirs:
            records[run_dir].append(attempt)
            write_json_atomic(run_dir / "attempts.json", records[run_dir])
        log = run_dirs[0] / "run.log"
        for run_dir in run_dirs[1:]:  # a pack writes one log; every member's run.log leads to it
            if not (run_dir / "run.log").exists():
                (run_dir / "run.log").symlink_to(log.resolve())
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
        for run_dir in run_dirs:
            write_json_atomic(run_dir / "attempts.json", records[run_dir])
        return code
    finally:
        for lock in locks:
            release(lock)


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") == 0 or argv.index("--") == len(argv) - 1:
        print("usage: python -m sweeps.worker <run_dir> [<run_dir> …] -- <command …>", file=sys.stderr)
        return 2
    split = argv.index("--")
    code = run_job(argv[:split], argv[split + 1 :])
    return 0 if code is None else code if code >= 0 else 128 - code  # killed by signal N: exit 128 + N


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
