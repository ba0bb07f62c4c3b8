"""The SLURM backend: one job array per ``run`` through submitit, one array task per pending point or pack.

Each array task runs `lorakit.sweeps.worker.run_job` on its node (same lock, same records as the local backend), so a
point is never run twice at once across backends, and the results table is the same. The sweep's ``slurm:`` settings
map to submitit's: partition, time_min (the time limit), gpus_per_run, cpus_per_run, mem_gb, array_parallelism (how
many tasks may run at once), and extra (any other ``slurm_*`` parameter, e.g. ``{account: lab}``).
"""

import os
import sys

from tqdm.auto import tqdm

from lorakit.core.project import CLONE
from lorakit.sweeps.spec import Point, Sweep
from lorakit.sweeps.store import point_status, write_results
from lorakit.sweeps.worker import run_job


def run_point_job(run_dirs: list[str], command: list[str], cwd: str) -> int | None:
    """What one array task does on its compute node, in the folder `run` was started from."""
    os.chdir(cwd)
    return run_job(run_dirs, command)


def executor_for(sweep: Sweep):
    import submitit

    settings = sweep.slurm
    executor = submitit.AutoExecutor(folder=sweep.output_root / "slurm" / "%j", cluster="slurm")
    parameters = {
        "name": f"sweep-{sweep.name}",
        "timeout_min": int(settings.get("time_min", 60)),
        "slurm_array_parallelism": int(settings.get("array_parallelism", 8)),
        "cpus_per_task": int(settings.get("cpus_per_run", 1)),
        "slurm_setup": [f"export PYTHONPATH={CLONE}:${{PYTHONPATH:-}}"] if CLONE else [],
    }
    if settings.get("partition"):
        parameters["slurm_partition"] = settings["partition"]
    if settings.get("gpus_per_run"):
        parameters["slurm_gpus_per_node"] = int(settings["gpus_per_run"])
    if settings.get("mem_gb"):
        parameters["mem_gb"] = int(settings["mem_gb"])
    parameters |= {f"slurm_{k}": v for k, v in (settings.get("extra") or {}).items()}
    executor.update_parameters(**parameters)
    return executor


def run_slurm(sweep: Sweep, points: list[Point], wait: bool = True, pack=None) -> list:
    """Submit the pending and interrupted points (in packs of up to `pack`, default the file's) as one job array;
    wait for it (with a progress bar) unless told not to. Returns the submitit jobs."""
    todo = sweep.jobs([p for p in points if point_status(p) in ("pending", "interrupted")], pack)
    if not todo:
        write_results(sweep, points)
        return []
    executor = executor_for(sweep)
    for job in todo:
        job.write_pack_file()
    dirs, commands = [[str(d) for d in j.run_dirs] for j in todo], [j.command(sys.executable) for j in todo]
    jobs = executor.map_array(run_point_job, dirs, commands, [os.getcwd()] * len(todo))
    print(f"submitted {len(jobs)} array tasks as job {jobs[0].job_id.split('_')[0]}", file=sys.stderr)
    if wait:
        for job in tqdm(jobs, desc=f"sweep {sweep.name} (slurm)", unit="run"):
            try:
                job.result()
            except Exception as err:  # a task that died (time limit, node failure): its point shows as failed
                print(f"array task {job.job_id}: {type(err).__name__}: {str(err).splitlines()[0]}", file=sys.stderr)
            write_results(sweep, points)
    return jobs
