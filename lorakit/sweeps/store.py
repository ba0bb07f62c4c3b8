"""The state of a sweep, read from its run directories alone (so any process, on any node, sees the same thing).

A point is ``done`` or ``diverged`` (its metrics.json says so), ``failed`` (its last attempt exited non-zero without
being interrupted), ``running`` (a live worker holds its lock), ``interrupted`` (started, then stopped or killed:
the next ``run`` resumes it), ``damaged`` (its metrics.json or attempts.json does not parse: reported, never run,
never breaking the other points), or ``pending``. ``results.csv`` has one row per finished point (done, diverged,
failed): its grid values, status, final and best metrics, wall time, exit code and error, and (for runs with
--lora_diagnostics_steps) the last measured step's mean diagnostics; it is rebuilt from the run directories and
written atomically, so it can never hold a row twice.
"""

from pathlib import Path

import pandas as pd

from lorakit.core.atomic import write_csv_atomic, write_json_atomic
from lorakit.core.run_folder import read_json_file
from lorakit.dynamics.callback import SUMMARY, read_rows
from lorakit.sweeps.spec import Point, Sweep, describe
from lorakit.sweeps.worker import Damaged, finished, is_locked, read_attempts, read_lock

FINISHED = ("done", "diverged", "failed")


def read_metrics(run_dir: Path) -> dict:
    """The point's metrics.json: {} when there is none, `Damaged` when it is not a JSON object."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return {}
    found = read_json_file(path)
    if not isinstance(found, dict):
        raise Damaged(f"{path} is not a JSON object")
    return found


def damage(point: Point) -> str | None:
    """Why the point's records cannot be read, or None."""
    try:
        read_metrics(point.run_dir)
        read_attempts(point.run_dir)
    except Damaged as err:
        return str(err)
    return None


def point_status(point: Point) -> str:
    if is_locked(point.run_dir):  # the lock first: a run that finishes meanwhile then reads as finished, not stopped
        return "running"
    try:
        metrics, attempts = read_metrics(point.run_dir), read_attempts(point.run_dir)
    except Damaged:
        return "damaged"
    if finished(point.run_dir, attempts):
        return metrics["status"]
    if not attempts:
        return "pending"
    last = attempts[-1]
    if last.get("exit_code") is None or last.get("interrupted"):
        return "interrupted"
    return "failed"  # a non-zero exit, or a zero exit that left no done/diverged metrics


def flatten(prefix: str, values) -> dict:
    """A metrics entry's scalars as prefixed columns (an entry that is not a mapping gives none)."""
    if not isinstance(values, dict):
        return {}
    return {f"{prefix}{k}": v for k, v in values.items() if isinstance(v, int | float | str | bool)}


def result_row(point: Point, status: str) -> dict:
    metrics, attempts = read_metrics(point.run_dir), read_attempts(point.run_dir)
    last = attempts[-1] if attempts else {}
    row = {"run_id": point.run_id, **point.values, "status": status}
    row |= flatten("final_", metrics.get("final")) | flatten("best_", metrics.get("best"))
    row |= flatten("before_", metrics.get("before"))
    row["diverged_at_step"] = metrics.get("diverged_at_step")
    elapsed = last.get("finished", 0) - last.get("started", 0) if last.get("finished") else None
    row["wall_time_s"] = metrics.get("wall_time_s") or (round(elapsed, 1) if elapsed is not None else None)
    row["exit_code"] = last.get("exit_code")
    error = (last.get("error") or "").strip().splitlines()
    row["error"] = error[-1] if status == "failed" and error else ""
    row["attempts"] = len(attempts)
    row["run_dir"] = str(point.run_dir)
    return row | final_diagnostics(point.run_dir)


def final_diagnostics(run_dir: Path) -> dict:
    """The last row of a run's diagnostics summary (--lora_diagnostics_steps) as ``diag_<quantity>`` columns, with
    its step as ``diag_step``; none for a run without diagnostics."""
    rows = read_rows(run_dir, SUMMARY)
    if not rows:
        return {}
    return {f"diag_{k}": v for k, v in rows[-1].items() if k != "layers"}


def statuses(points: list[Point]) -> dict[str, str]:
    return {p.run_id: point_status(p) for p in points}


def write_results(sweep: Sweep, points: list[Point]) -> pd.DataFrame:
    """Rebuild ``results.csv`` from the run directories (finished points only) and write the sweep's record."""
    sweep.output_root.mkdir(parents=True, exist_ok=True)
    state = statuses(points)
    rows = [result_row(p, state[p.run_id]) for p in points if state[p.run_id] in FINISHED]
    frame = pd.DataFrame(rows, columns=None if rows else ["run_id", *sweep.grid, "status"])
    write_csv_atomic(frame, sweep.output_root / "results.csv")
    write_json_atomic(sweep.output_root / "sweep.json", describe(sweep))
    return frame


def status_table(points: list[Point]) -> str:
    """One line per point: status, grid values, and the error of a failed one."""
    lines, counts = [], {}
    for point in points:
        status = point_status(point)
        counts[status] = counts.get(status, 0) + 1
        values = " ".join(f"{k}={v}" for k, v in point.values.items())
        line = f"{status:<12}{point.run_id}  {values}"
        holder = read_lock(point.run_dir) if status == "running" else None
        if holder:
            line += f"  (host {holder.get('host')}, pid {holder.get('pid')}, slurm job {holder.get('slurm_job_id')})"
        if status == "damaged":
            line += f"\n{'':12}{damage(point)} (delete it, or the run folder, to run the point again)"
        if status == "failed":
            last = read_attempts(point.run_dir)[-1]
            error = (last.get("error") or "").strip().splitlines()
            line += f"\n{'':12}exit {last.get('exit_code')}: {error[-1] if error else 'no output'}"
            line += f"\n{'':12}log: {point.run_dir / 'run.log'}"
        lines.append(line)
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return "\n".join([f"{len(points)} runs: {summary}", *lines])
