"""The local backend: a queue that keeps every slot busy, a slot being one GPU (one run each) or one CPU worker.

A run starts the moment a slot frees, not in waves. Each run goes through `lorakit.sweeps.worker`, in its own process
session, so the worker outlives a killed sweep and finishes (and records) its run. Points another process runs
(another ``run`` of the same sweep, or the orphaned workers of a killed one) are waited for, and started here if that
process stops without finishing them; a point this ``run`` itself attempted is not attempted twice. Ctrl-C or SIGTERM
stops the queue and passes the signal to the running workers, whose runs are then resumed by the next ``run``.
"""

import os
import signal
import subprocess
import sys
import time

from tqdm.auto import tqdm

from lorakit.core.project import with_project_on_path
from lorakit.sweeps.spec import Job, Point, Sweep
from lorakit.sweeps.store import FINISHED, point_status, statuses, write_results
from lorakit.sweeps.worker import LOCKED

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
    env = with_project_on_path({**os.environ, "CUDA_VISIBLE_DEVICES": gpu if gpu is not None else ""})  # CPU: none
    job.write_pack_file()
    dirs = [str(d) for d in job.run_dirs]
    command = [sys.executable, "-m", "lorakit.sweeps.worker", *dirs, "--", *job.command(sys.executable)]
    return subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL)


def run_local(sweep: Sweep, points: list[Point], workers: int | None = None, pack=None) -> None:
    """Run every point that is pending or interrupted (in packs of up to `pack`, default the file's) until every
    point is finished, failed, damaged, or was attempted by this run; wait for points other processes are running."""
    free = slots(sweep, workers)
    attempted: set[str] = set()  # points a worker of this run ran, or could not start: not started again here
    active: dict[subprocess.Popen, tuple[Job, str | None]] = {}
    progress = tqdm(total=len(points), desc=f"sweep {sweep.name}", unit="run")
    try:
        while True:
            state = statuses(points)
            progress.update(sum(s in FINISHED for s in state.values()) - progress.n)
            queued = {p.run_id for job, _ in active.values() for p in job.points}  # started, maybe not locked yet
            startable = [p for p in points if startable_here(p, state, queued | attempted)]
            if not (startable or active or any(state[p.run_id] == "running" for p in points)):
                break
            for job in sweep.jobs(startable, pack)[: len(free)] if free else []:
                gpu = free.pop(0)
                active[start(job, gpu)] = (job, gpu)
            for proc in [p for p in active if p.poll() is not None]:
                job, gpu = active.pop(proc)
                free.append(gpu)
                if proc.returncode != LOCKED:  # the worker ran its points (or could not): once per `run` is enough
                    attempted |= {p.run_id for p in job.points}
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


def startable_here(point: Point, state: dict[str, str], busy: set[str]) -> bool:
    """A point this run may start: pending or interrupted, not queued here, not attempted by this run already (a
    worker that found it locked by another process did not attempt it)."""
    return state[point.run_id] in ("pending", "interrupted") and point.run_id not in busy


def dry_run(sweep: Sweep, points: list[Point], pack=None) -> str:
    """The command each job would run, with its points' statuses (a pack lists its members' commands)."""
    lines = []
    for job in sweep.jobs(points, pack):
        if job.pack_dir is not None:
            lines.append(f"# pack of {len(job.points)}: {' '.join(job.command('python'))}")
        lines += [f"# {point_status(p)} {p.run_id}\n{' '.join(p.command('python'))}" for p in job.points]
    return "\n".join(lines)
