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

from sweeps.spec import PROJECT, Job, Point, Sweep
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


def start(job: Job, gpu: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = gpu if gpu is not None else ""  # a CPU worker sees no GPU
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
    job.write_pack_file()
    dirs = [str(d) for d in job.run_dirs]
    command = [sys.executable, "-m", "sweeps.worker", *dirs, "--", *job.command(sys.executable)]
    return subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL)


def run_local(sweep: Sweep, points: list[Point], workers: int | None = None, pack=None) -> None:
    """Run every point that is pending or interrupted (in packs of up to `pack`, default the file's); wait for
    points other processes are running."""
    free = slots(sweep, workers)
    state = statuses(points)
    queue = sweep.jobs([p for p in points if state[p.run_id] in ("pending", "interrupted")], pack)
    foreign = [p for p in points if state[p.run_id] == "running"]
    active: dict[subprocess.Popen, tuple[Job, str | None]] = {}
    progress = tqdm(total=sum(len(j.points) for j in queue) + len(foreign), desc=f"sweep {sweep.name}", unit="run")
    try:
        while queue or active or foreign:
            while queue and free:
                job = queue.pop(0)
                gpu = free.pop(0)
                active[start(job, gpu)] = (job, gpu)
            for proc in [p for p in active if p.poll() is not None]:
                job, gpu = active.pop(proc)
                free.append(gpu)
                progress.update(len(job.points))
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


def dry_run(sweep: Sweep, points: list[Point], pack=None) -> str:
    """The command each job would run, with its points' statuses (a pack lists its members' commands)."""
    lines = []
    for job in sweep.jobs(points, pack):
        if job.pack_dir is not None:
            lines.append(f"# pack of {len(job.points)}: {' '.join(job.command('python'))}")
        lines += [f"# {point_status(p)} {p.run_id}\n{' '.join(p.command('python'))}" for p in job.points]
    return "\n".join(lines)
