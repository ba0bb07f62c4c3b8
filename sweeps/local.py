"""The local backend: a queue that keeps every slot busy, a slot being one GPU (one run each) or one CPU worker.

A run starts the moment a slot frees, not in waves. Each run goes through `sweeps.worker`, in its own process
session, so the worker outlives a killed sweep and finishes (and records) its run; a restarted sweep waits for such
runs instead of starting them again. Ctrl-C or SIGTERM stops the queue and passes the signal to the running workers,
whose runs are then resumed by the next ``run``.
"""

import os
import signal
import subprocess
import sys
import time

from tqdm.auto import tqdm

from sweeps.spec import PROJECT, Point, Sweep
from sweeps.store import point_status, statuses, write_results

POLL_S = 0.5


def slots(sweep: Sweep, workers: int | None) -> list[str | None]:
    """GPU ids (one run per GPU) when GPUs are visible and asked for, else `workers` CPU slots (None)."""
    gpus = sweep.local.get("gpus", "auto")
    if isinstance(gpus, int):
        gpus = [str(i) for i in range(gpus)]
    elif gpus == "auto":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            gpus = [g for g in visible.split(",") if g.strip()]
        else:
            import torch

            gpus = [str(i) for i in range(torch.cuda.device_count())]
    if gpus and workers is None:
        return [str(g) for g in gpus]
    return [None] * (workers or sweep.local.get("workers", 1))


def start(point: Point, gpu: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = gpu if gpu is not None else ""  # a CPU worker sees no GPU
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "sweeps.worker", str(point.run_dir), "--", *point.command(sys.executable)]
    return subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL)


def run_local(sweep: Sweep, points: list[Point], workers: int | None = None) -> None:
    """Run every point that is pending or interrupted; wait for points other processes are running."""
    free = slots(sweep, workers)
    state = statuses(points)
    queue = [p for p in points if state[p.run_id] in ("pending", "interrupted")]
    foreign = [p for p in points if state[p.run_id] == "running"]
    active: dict[subprocess.Popen, tuple[Point, str | None]] = {}
    progress = tqdm(total=len(queue) + len(foreign), desc=f"sweep {sweep.name}", unit="run")
    try:
        while queue or active or foreign:
            while queue and free:
                point = queue.pop(0)
                gpu = free.pop(0)
                active[start(point, gpu)] = (point, gpu)
            for proc in [p for p in active if p.poll() is not None]:
                point, gpu = active.pop(proc)
                free.append(gpu)
                progress.update()
                write_results(sweep, points)
            for point in [p for p in foreign if point_status(p) != "running"]:
                foreign.remove(point)
                progress.update()
                write_results(sweep, points)
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        for proc in active:
            proc.send_signal(signal.SIGINT)
        for proc in active:
            proc.wait()
        raise
    finally:
        progress.close()
        write_results(sweep, points)


def dry_run(points: list[Point]) -> str:
    """The command each point would run, one per line, with its status."""
    return "\n".join(f"# {point_status(p)} {p.run_id}\n{' '.join(p.command('python'))}" for p in points)
