"""python -m lorakit.sweeps run|status|report <sweep.yaml>

    python -m lorakit.sweeps run launch/sweeps/embedded_mini.yaml           # local: CPU workers, or one run per GPU
    python -m lorakit.sweeps run launch/sweeps/embedded_mini.yaml --dry-run  # validate every point, print commands
    python -m lorakit.sweeps run launch/sweeps/glue_roberta_large.yaml --backend slurm
    python -m lorakit.sweeps status launch/sweeps/embedded_mini.yaml        # done, diverged, failed, running, …
    python -m lorakit.sweeps run launch/sweeps/embedded_mini.yaml --retry-failed
    python -m lorakit.sweeps run launch/sweeps/embedded_mini.yaml --pack 10  # 10 configurations per base, one process
    python -m lorakit.sweeps run launch/sweeps/glue_roberta_large_packed.yaml --pack auto --pack-memory 22  # an A10
    python -m lorakit.sweeps report launch/sweeps/embedded_mini.yaml        # summary.csv, best.csv, figures

``run`` is idempotent: finished points are skipped, interrupted ones resume, points another process is running are
waited for. Exit codes: 0 every point finished (done or diverged; for ``--no-wait``, submitted), 1 some failed or did
not finish, 2 a bad sweep file or point, 130 interrupted (run again to resume).
"""

import argparse
import math
import shutil
import signal
import sys

from lorakit.core.atomic import write_json_atomic
from lorakit.core.errors import ConfigError, one_line
from lorakit.core.parsing import CommandParser
from lorakit.core.run_folder import writable_dir
from lorakit.sweeps.autopack import AutoPack
from lorakit.sweeps.local import dry_run, run_local, slots
from lorakit.sweeps.report import write_report
from lorakit.sweeps.slurm import run_slurm
from lorakit.sweeps.spec import check_pack, fixed_values, load_sweep, validate
from lorakit.sweeps.store import point_status, status_table, write_results
from lorakit.sweeps.worker import read_attempts
from lorakit.training.command import report as report_error


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def parse(argv: list[str]) -> argparse.Namespace:
    parser = CommandParser(prog="python -m lorakit.sweeps", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "status", "report"])
    parser.add_argument("sweep", help="the sweep YAML file")
    parser.add_argument(
        "--dry-run", action="store_true", help="run: validate and print the commands only (--pack auto still "
        "measures packs, and keeps the figures)"
    )  # fmt: skip
    parser.add_argument("--backend", choices=["local", "slurm"], default="local", help="run: where runs go")
    parser.add_argument(
        "--workers", type=positive_int, default=None, help="run, local: CPU workers (default: the file's)"
    )
    parser.add_argument("--retry-failed", action="store_true", help="run: run failed points again")
    parser.add_argument("--no-wait", action="store_true", help="run, slurm: submit and return")
    parser.add_argument(
        "--pack", default=None, metavar="K|auto", help="run: train up to K compatible points at once on one base "
        "(points differing only in learning rate, init, LoRA+ ratio); auto: as many as fit the device's memory, "
        "measured. Default: the file's pack, or 1"
    )  # fmt: skip
    parser.add_argument(
        "--pack-memory", type=positive_number, default=None, metavar="GIB", help="run, --pack auto: the memory a "
        "pack may use, in GiB (default: the whole GPU; CPU workers share the machine's memory)"
    )  # fmt: skip
    return parser.parse_args(argv)


def pack_sizer(sweep, args):
    """The pack size `run` uses: --pack, else the file's; "auto" becomes an AutoPack for the slots runs go to."""
    pack = sweep.pack if args.pack is None else args.pack
    if pack != "auto":
        if args.pack_memory is not None:
            raise ConfigError("--pack-memory is for --pack auto")
        return pack
    if args.backend == "slurm":  # measured here, on a GPU of this machine's if the runs take GPUs
        if int(sweep.slurm.get("gpus_per_run", 0) or 0):
            visible = [s for s in slots(sweep, None) if s is not None]
            return AutoPack(sweep, visible[:1] or ["0"], args.pack_memory, needs_gpu=True)
        return AutoPack(sweep, [None], args.pack_memory, default_gib=sweep.slurm.get("mem_gb"))
    return AutoPack(sweep, slots(sweep, args.workers), args.pack_memory)


def forget_failures(points) -> int:
    """Mark failed points' last attempt as interrupted so they run again; returns how many."""
    count = 0
    for point in points:
        if point_status(point) == "failed":
            attempts = read_attempts(point.run_dir)
            attempts[-1]["interrupted"] = "retry requested"
            write_json_atomic(point.run_dir / "attempts.json", attempts)
            count += 1
    return count


def run(sweep, points, args) -> int:
    if args.dry_run:
        print(dry_run(sweep, points, args.pack))
        print(f"{len(points)} points valid", file=sys.stderr)
        return 0
    if args.retry_failed:
        print(f"retrying {forget_failures(points)} failed point(s)", file=sys.stderr)
    if args.backend == "slurm":
        run_slurm(sweep, points, wait=not args.no_wait, pack=args.pack)
        if args.no_wait:
            return 0
    else:
        run_local(sweep, points, args.workers, args.pack)
    print(status_table(points))
    return 0 if all(point_status(p) in ("done", "diverged") for p in points) else 1


def check_backend(args) -> None:
    """SLURM must be there before a SLURM sweep is planned."""
    if args.command == "run" and args.backend == "slurm" and not args.dry_run and shutil.which("sbatch") is None:
        raise ConfigError("--backend slurm: no SLURM here (sbatch is not on PATH); run on a SLURM login node")


def setup(argv: list[str]) -> tuple:
    """The command line, the sweep file and its points, checked: every problem a ConfigError."""
    args = parse(argv)
    check_backend(args)
    sweep = load_sweep(args.sweep)
    points = validate(sweep) if args.command == "run" else sweep.points()
    if args.pack is not None:
        args.pack = check_pack(args.pack, "--pack")
    if args.command == "run":
        writable_dir(sweep.output_root, "output_root")
        args.pack = pack_sizer(sweep, args)
        sweep.jobs(points, args.pack)  # a point a pack cannot take is an error now, not a failed run later
    return args, sweep, points


def status(sweep, points, args) -> int:
    print(status_table(points))
    return 0


def report(sweep, points, args) -> int:
    frame = write_results(sweep, points)
    if frame.empty:
        print("sweeps: error: no finished runs to report yet", file=sys.stderr)
        return 2
    fixed = fixed_values(sweep)
    written = write_report(sweep.output_root, sweep.metric, sweep.higher_is_better, fixed, list(sweep.grid))
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        args, sweep, points = setup(sys.argv[1:] if argv is None else argv)
        return {"run": run, "status": status, "report": report}[args.command](sweep, points, args)
    except ConfigError as err:
        print(f"sweeps: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweeps: interrupted; running workers were told to stop. Run again to resume.", file=sys.stderr)
        return 130
    except Exception as err:  # unforeseen: one line (LORA_TOOLKIT_DEBUG=1 adds the traceback)
        return report_error("sweeps", f"{type(err).__name__}: {err}", 1, err)


if __name__ == "__main__":
    sys.exit(main())
