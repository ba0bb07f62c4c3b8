"""python -m benchmarks.gpu_check run | table | carry (and the steps' own prepare-decoder | prepare-encoder)."""

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.gpu_check import plan, prepare, runner, tables

NEEDED = ("torch", "transformers", "peft", "accelerate", "pytest", "bitsandbytes")  # the GPU plan's imports
CARRIED = ("bitsandbytes==0.50.2",)  # what the GPU machine's image lacks (its torch, transformers, … are its own)
CARRY_LIMIT = 64 * 2**20  # what travels with a device call, the working tree included
WHEEL_PLATFORMS = ("manylinux_2_28", "manylinux_2_27", "manylinux_2_24", "manylinux_2_17", "manylinux2014")


def missing_for_gpu() -> str | None:
    """Why the GPU plan cannot run here, in one line, or None."""
    for name in NEEDED:
        if importlib.util.find_spec(name) is None:
            carry = " (python -m benchmarks.gpu_check carry, then carry .whl)" if f"{name}==" in str(CARRIED) else ""
            return f"the package {name} is missing{carry}"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (the CPU smoke run is --smoke)"
    return None


def environment(mode: str, budget_s: float) -> dict:
    versions = {}
    for name in NEEDED[:4] + ("bitsandbytes",):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    gpu = "CPU"
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
        done = subprocess.run(query, capture_output=True, text=True)
        gpu = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else "unknown GPU"
    source = runner.ROOT / ".whl" / "SOURCE"
    return {
        "group": "environment", "mode": mode, "budget_s": budget_s, "gpu": gpu, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"), "versions": versions,
        "source": source.read_text().strip() if source.is_file() else "unknown",
        "command": "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:]),
    }  # fmt: skip


def work_folder(scale: plan.Scale) -> Path:
    """Scratch space for the checkpoints: memory-backed /dev/shm when it has room for a 7B bf16 checkpoint."""
    shm = Path("/dev/shm")
    roomy = scale.device == "cuda" and shm.is_dir() and shutil.disk_usage(shm).free > 32 * 2**30
    return Path(tempfile.mkdtemp(prefix="gpu_check-", dir=shm if roomy else None))


def run(args) -> int:
    scale = plan.SMOKE if args.smoke else plan.GPU
    if not args.smoke:
        problem = missing_for_gpu()
        if problem:
            print(f"gpu_check: error: {problem}", file=sys.stderr)
            return 2
    out = Path(args.out or os.environ.get("OUT") or "")
    if not str(out):
        print("gpu_check: error: give --out or set OUT", file=sys.stderr)
        return 2
    budget = args.budget or scale.budget_s
    record = runner.Record(out)
    record.result(environment("smoke" if args.smoke else "gpu", budget))
    work = work_folder(scale)
    try:
        lines = runner.run_plan(plan.plan(scale, work, out), budget, record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(tables.document(tables.read_results(out / "results.jsonl")))
    return 0 if all(line["status"] == "ok" for line in lines) else 1


def table(args) -> int:
    results = args.folder / "results.jsonl"
    if not results.is_file():
        print(f"gpu_check: error: {results}: no such file", file=sys.stderr)
        return 2
    text = tables.document(tables.read_results(results))
    print(text)
    if args.document:
        env = next((x for x in tables.read_results(results) if x.get("group") == "environment"), {})
        title = f"## GPU check (issue 15), {env.get('date', '?')} on {env.get('gpu', '?')}"
        old = args.document.read_text() if args.document.is_file() else "# Benchmarks\n"
        args.document.write_text(old.rstrip("\n") + f"\n\n{title}\n\n{text}")
    return 0


def carry(args) -> int:
    """Download the wheels the GPU machine lacks (for its Python 3.12 on x86-64) into `args.dest`, with the source
    revision beside them, and check that they fit what a device call carries."""
    args.dest.mkdir(exist_ok=True)
    platforms = [flag for name in WHEEL_PLATFORMS for flag in ("--platform", f"{name}_x86_64")]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    command += ["--implementation", "cp", *platforms, "-d", str(args.dest), *CARRIED]
    if subprocess.run(command).returncode != 0:
        print("gpu_check: error: pip download failed (see above)", file=sys.stderr)
        return 2
    described = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True)
    (args.dest / "SOURCE").write_text(described.stdout.strip() or "unknown")
    size = sum(f.stat().st_size for f in args.dest.iterdir() if f.is_file()) + tree_bytes()
    print(f"{args.dest} and the working tree: {size / 2**20:.1f} MiB (a device call carries at most 64 MiB)")
    return 0 if size < CARRY_LIMIT else 2


def tree_bytes() -> int:
    """The bytes of what a device call sends besides the carried folder: tracked and untracked, unignored files."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=runner.ROOT,
                            capture_output=True, text=True)  # fmt: skip
    files = [runner.ROOT / name for name in listed.stdout.split("\0") if name]
    return sum(f.stat().st_size for f in files if f.is_file())


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the plan, writing results into --out (default $OUT)")
    run_parser.add_argument("--out", help="the output folder (default: $OUT)")
    run_parser.add_argument("--smoke", action="store_true", help="tiny architectures on a CPU")
    run_parser.add_argument("--budget", type=float, help="seconds for the whole run (default: the plan's)")
    table_parser = commands.add_parser("table", help="a run's results as Markdown tables")
    table_parser.add_argument("folder", type=Path, help="the folder holding results.jsonl")
    table_parser.add_argument("--document", type=Path, help="append the tables to this Markdown file")
    carry_parser = commands.add_parser("carry", help="download the wheels the GPU machine lacks")
    carry_parser.add_argument("--dest", type=Path, default=runner.ROOT / ".whl")
    for name in ("prepare-decoder", "prepare-encoder"):
        step = commands.add_parser(name, help=argparse.SUPPRESS)
        step.add_argument("--arch", required=True)
        step.add_argument("--folder", type=Path, required=True)
        step.add_argument("--seq", type=int, default=128)
        step.add_argument("--batch", type=int, default=4)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command.startswith("prepare-"):
        print(json.dumps(prepare.main(args.command, args)))
        return 0
    return {"run": run, "table": table, "carry": carry}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
