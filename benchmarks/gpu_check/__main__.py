"""python -m benchmarks.gpu_check run | table | carry (and the steps' own prepare-decoder | prepare-encoder |
probe-pack)."""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from benchmarks.gpu_check import machine, plan, prepare, runner, tables


def work_folder(scale: plan.Scale) -> Path:
    """Scratch space for the checkpoints: memory-backed /dev/shm when it has room for a 7B bf16 checkpoint."""
    shm = Path("/dev/shm")
    roomy = scale.device == "cuda" and shm.is_dir() and shutil.disk_usage(shm).free > 32 * 2**30
    return Path(tempfile.mkdtemp(prefix="gpu_check-", dir=shm if roomy else None))


def run(args) -> int:
    """The plan, into the output folder; 0 when no step failed or timed out (steps left for lack of time are not
    failures), 1 otherwise, 2 when the machine lacks what the plan needs."""
    scale = plan.SMOKE if args.smoke else plan.GPU
    out = args.out or os.environ.get("OUT")
    if not out:
        print("gpu_check: error: give --out or set OUT", file=sys.stderr)
        return 2
    problem = None if args.smoke else machine.missing_for_gpu()
    if problem:
        print(f"gpu_check: error: {problem}", file=sys.stderr)
        return 2
    out, budget = Path(out).resolve(), args.budget or scale.budget_s
    record = runner.Record(out)
    record.result(machine.environment("smoke" if args.smoke else "gpu", budget, sys.argv[1:]))
    work = work_folder(scale)
    try:
        steps = plan.select(plan.plan(scale, work, out), args.only)
        lines = runner.run_plan(steps, budget, record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(tables.document(tables.read_results(out / "results.jsonl")))
    return 0 if all(line["status"] in ("ok", "skipped") for line in lines) else 1


def table(args) -> int:
    """A run's results as the tables of docs/benchmarks.md, printed and, with --document, appended there."""
    results = args.folder / "results.jsonl"
    if not results.is_file():
        print(f"gpu_check: error: {results}: no such file", file=sys.stderr)
        return 2
    lines = tables.read_results(results)
    text = tables.document(lines)
    print(text)
    if args.document:
        env = next((x for x in lines if x.get("group") == "environment"), {})
        title = f"## GPU check (issue 15), {env.get('date', '?')} on {env.get('gpu', '?')}"
        old = args.document.read_text() if args.document.is_file() else "# Benchmarks\n"
        args.document.write_text(old.rstrip("\n") + f"\n\n{title}\n\n{text}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the plan, writing results into --out (default $OUT)")
    run_parser.add_argument("--out", help="the output folder (default: $OUT)")
    run_parser.add_argument("--smoke", action="store_true", help="tiny architectures on a CPU")
    run_parser.add_argument("--budget", type=float, help="seconds for the whole run (default: the plan's)")
    run_parser.add_argument("--only", nargs="+", help="these groups or group/case steps only (e.g. roberta)")
    table_parser = commands.add_parser("table", help="a run's results as Markdown tables")
    table_parser.add_argument("folder", type=Path, help="the folder holding results.jsonl")
    table_parser.add_argument("--document", type=Path, help="append the tables to this Markdown file")
    carry_parser = commands.add_parser("carry", help="download the wheels the GPU machine lacks")
    carry_parser.add_argument("--dest", type=Path, default=machine.ROOT / ".whl")
    for name in ("prepare-decoder", "prepare-encoder"):
        step = commands.add_parser(name, help=argparse.SUPPRESS)
        step.add_argument("--arch", required=True)
        step.add_argument("--folder", type=Path, required=True)
        step.add_argument("--seq", type=int, default=128)
        step.add_argument("--batch", type=int, default=4)
        step.add_argument("--precision", choices=["bf16", "fp32"], default="fp32")
    probe = commands.add_parser("probe-pack", help=argparse.SUPPRESS)
    probe.add_argument("pack", type=Path)
    probe.add_argument("--gpu", default=None, help="the GPU the probes see (none: a CPU)")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command.startswith("prepare-"):
        print(json.dumps(prepare.timed(args.command, args)), flush=True)
        return 0
    if args.command == "probe-pack":
        print(json.dumps(prepare.probe_pack(args.pack, args.gpu)), flush=True)
        return 0
    if args.command == "carry":
        return machine.carry(args.dest)
    return {"run": run, "table": table}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
