"""Runs one sweep point under a lock, so no configuration ever runs twice at once, and records each attempt.

    python -m lorakit.sweeps.worker <run_dir> -- <run command …>
    python -m lorakit.sweeps.worker <run_dir> <run_dir> … -- python -m lorakit pack <pack.json>  # a pack: each locked

The lock is an exclusive ``flock`` on ``<output_root>/locks/<point>.lock``, outside the run folder (deleting a run
folder mid-run drops no lock), held by the worker for the whole run. The kernel releases it when the worker dies,
however it dies, so a lock is never stale (``flock`` also works on NFSv4 shared folders, as SLURM clusters use). The
file says who holds it (host, pid, SLURM job) for ``status``. The worker, not the sweep, holds the lock: if the sweep
process is killed, its workers finish their runs and record them; the runner gets SIGTERM if its worker dies, so no
run outlives its lock. ``<run_dir>/attempts.json`` lists every attempt: command, start, end, exit code, whether a
signal ended it (interrupted: the next ``run`` resumes it), and the last lines of the log when it failed. The runner
itself resumes from the newest complete checkpoint. Lock and log files are never opened through a symbolic link.
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

from lorakit.core.atomic import write_json_atomic
from lorakit.core.run_folder import earlier_status, read_json_file
from lorakit.core.secrets import redact_argv

LOG_TAIL_LINES = 20
PR_SET_PDEATHSIG = 1  # prctl option: the signal a process gets when its parent dies
ATTEMPT_FIELDS = {"exit_code": int, "started": int | float, "finished": int | float, "error": str, "command": list}
ACQUIRE_WAIT_S = 2.0  # how long a worker retries a held lock (a `status` probe holds it for microseconds)


def lock_path(run_dir: Path) -> Path:
    """Where a run folder's lock lives: ``<root>/locks/<name>.lock`` for a sweep's ``<root>/runs/<name>``, else a
    hidden file beside the run folder; never inside it."""
    run_dir = Path(run_dir)
    if run_dir.parent.name == "runs":
        return run_dir.parent.parent / "locks" / f"{run_dir.name}.lock"
    return run_dir.parent / f".{run_dir.name}.lock"


def open_no_follow(path: Path, flags: int) -> int:
    """os.open that refuses a symbolic link at `path` (a planted link must not redirect our writes)."""
    return os.open(path, flags | os.O_NOFOLLOW, 0o644)


def read_lock(run_dir: Path) -> dict | None:
    found = read_json_file(lock_path(run_dir))
    return found if isinstance(found, dict) else None


def is_locked(run_dir: Path) -> bool:
    """Whether a live worker holds the run's lock (probed with a non-blocking shared flock)."""
    try:
        fd = open_no_follow(lock_path(run_dir), os.O_RDONLY)
    except OSError:
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
    lock_path(run_dir).parent.mkdir(parents=True, exist_ok=True)
    fd = open_no_follow(lock_path(run_dir), os.O_RDWR | os.O_CREAT)
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
    """The point's attempts; a missing file is none, a damaged one raises `Damaged`."""
    path = run_dir / "attempts.json"
    if not path.exists():
        return []
    found = read_json_file(path)
    if not isinstance(found, list) or not all(isinstance(a, dict) for a in found):
        raise Damaged(f"{path} is not a list of attempts")
    for number, attempt in enumerate(found, start=1):
        for key, kinds in ATTEMPT_FIELDS.items():
            if attempt.get(key) is not None and not isinstance(attempt[key], kinds):
                raise Damaged(f"{path}: attempt {number}'s {key} is a {type(attempt[key]).__name__}")
    return found


class Damaged(ValueError):
    """A run folder's record that does not parse: its point is reported as damaged, the sweep goes on."""


def finished(run_dir: Path, attempts: list[dict]) -> bool:
    """Done or diverged by its metrics, with a clean last exit."""
    return earlier_status(run_dir) in ("done", "diverged") and (not attempts or attempts[-1].get("exit_code") == 0)


def log_tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return "\n".join(lines[-LOG_TAIL_LINES:])


def die_with_worker() -> None:
    """In the runner's process (Linux): get SIGTERM when the worker dies, so a stale lock never hides a live run."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def ended_by_signal(code: int) -> bool:
    """A runner killed by a signal (SIGKILL from the OOM killer included: a negative return code), or one that
    recorded its interruption by SIGINT/SIGTERM (exit 130/143), as opposed to a runner's own error."""
    return code < 0 or code in (128 + signal.SIGINT, 128 + signal.SIGTERM)


def open_log(run_dirs: list[Path]) -> int:
    """The first point's run.log, opened to append (a symbolic link there is replaced by a file, never written
    through); the other points of a pack get a run.log that links to it, unless they keep a log of their own."""
    log = run_dirs[0] / "run.log"
    if log.is_symlink():
        log.unlink()
    fd = open_no_follow(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    for run_dir in run_dirs[1:]:
        member = run_dir / "run.log"
        if member.is_symlink():
            member.unlink()
        if not member.exists():
            member.symlink_to(log.resolve())
    return fd


LOCKED = 75  # the worker's exit code when a live run elsewhere holds one of its points (EX_TEMPFAIL)
CANNOT_RUN = 74  # its exit code when it could not start the run: a lock, log or record it cannot write (EX_IOERR)


class CannotRun(Exception):
    """The worker could not start a point's run: its lock, log or attempts file cannot be written, or its record is
    damaged. Nothing was run and no attempt recorded."""


def run_point(run_dir: str | Path, command: list[str]) -> int | None:
    """Run `command` for the point in `run_dir` if nobody else is running it. Returns its exit code (None: it was
    locked by a live run elsewhere)."""
    return run_job([run_dir], command)


def hold_locks(run_dirs: list[Path]) -> list[int] | None:
    """Every point's lock, taken in one order for everyone (two overlapping packs never wait on each other); None,
    holding nothing, when a live run elsewhere holds one."""
    locks = []
    for run_dir in sorted(run_dirs):
        lock = acquire(run_dir)
        if lock is None:
            for held in locks:
                release(held)
            return None
        locks.append(lock)
    return locks


def supervise(command: list[str], log: int) -> int:
    """Run `command` with its output appended to `log`, passing on SIGTERM and SIGINT; its return code."""
    with os.fdopen(log, "a") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_worker)

        def forward(signum, frame):
            child.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        return child.wait()


def write_attempts(records: dict[Path, list[dict]]) -> None:
    for run_dir, attempts in records.items():
        write_json_atomic(run_dir / "attempts.json", attempts)


def run_job(run_dirs: list[str | Path], command: list[str]) -> int | None:
    """Run `command` for the points in `run_dirs` (one point, or a pack trained together) if nobody else is running any
    of them: every point's lock is held and every point records the attempt. The run (a single one, or `python -m
    lorakit pack`) resumes from its newest complete checkpoint. Returns the exit code (None: a point was locked by a
    live run elsewhere, or finished meanwhile while others of its pack did not); raises CannotRun when it cannot
    start."""
    run_dirs = [Path(d) for d in run_dirs]
    try:
        locks = hold_locks(run_dirs)
    except OSError as err:
        raise CannotRun(f"cannot lock {run_dirs[0]}: {err}") from None
    if locks is None:
        return None
    try:
        records = {run_dir: read_attempts(run_dir) for run_dir in run_dirs}
        done = [finished(d, records[d]) for d in run_dirs]
        if any(done):  # finished while queued (another sweep or array task); a part-finished pack is left for the
            return 0 if all(done) else None  # next `run`, which packs the rest anew (nothing finished is redone)
        attempt = {"command": redact_argv(command), "host": socket.gethostname(), "started": time.time()}
        attempt |= {"exit_code": None, **({"pack": [str(d) for d in run_dirs]} if len(run_dirs) > 1 else {})}
        log = open_log(run_dirs)
        for run_dir in run_dirs:
            records[run_dir].append(attempt)
        try:
            write_attempts(records)
        except OSError:
            os.close(log)
            raise
    except (OSError, Damaged) as err:
        for lock in locks:
            release(lock)
        raise CannotRun(f"cannot start {run_dirs[0]}: {err}") from None
    try:
        code = supervise(command, log)
        attempt.update(exit_code=code, finished=time.time())
        if code != 0:
            attempt["error"] = log_tail(run_dirs[0] / "run.log")
            attempt["interrupted"] = ended_by_signal(code)
        write_attempts(records)
        return code
    finally:
        for lock in locks:
            release(lock)


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") == 0 or argv.index("--") == len(argv) - 1:
        print("usage: python -m lorakit.sweeps.worker <run_dir> [<run_dir> …] -- <command …>", file=sys.stderr)
        return 2
    split = argv.index("--")
    try:
        code = run_job(argv[:split], argv[split + 1 :])
    except CannotRun as err:
        print(f"sweeps.worker: error: {err}", file=sys.stderr)
        return CANNOT_RUN
    if code is None:
        return LOCKED
    return code if code >= 0 else 128 - code  # killed by signal N: exit 128 + N


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
