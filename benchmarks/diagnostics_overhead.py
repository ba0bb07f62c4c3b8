"""What the dynamics diagnostics cost: the embedded default (`python run_glue.py`) with and without
`--lora_diagnostics_steps N`, alternated, each in its own process; prints the Trainer's train_runtime and the final
metric of every run (measuring must not change it), the medians and the overhead (goal: ≤ 5% at an interval of 50).

    python -m benchmarks.diagnostics_overhead [--repeats 2] [--interval 50] [--extra "--max_train_samples 2000"]
"""

import argparse
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = re.compile(r"""['"]train_runtime['"]: ['"]?([0-9.]+)""")
RESULT = re.compile(r"^done: (.*) -> ", re.MULTILINE)


def train_runtime(argv: list[str], folder: Path) -> tuple[float, str]:
    """One run of the embedded default in its own process: its train_runtime in seconds and its final metric."""
    command = [sys.executable, "run_glue.py", "--output_dir", str(folder), *argv]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    found, result = RUNTIME.findall(done.stdout + done.stderr), RESULT.findall(done.stdout)
    if done.returncode != 0 or not found or not result:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"diagnostics_overhead: {' '.join(command)} failed ({done.returncode}): {' / '.join(tail)}")
    return float(found[-1]), result[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode (alternated: off, on, off, on, …)")
    parser.add_argument("--interval", type=int, default=50, help="--lora_diagnostics_steps of the measured runs")
    parser.add_argument("--extra", default="", help="more run_glue.py flags for both modes, one string")
    args = parser.parse_args(argv)
    common = shlex.split(args.extra)
    modes = {"off": common, f"every {args.interval} steps": [*common, "--lora_diagnostics_steps", str(args.interval)]}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for number, (mode, flags) in enumerate(modes.items()):
                seconds, result = train_runtime(flags, Path(scratch) / f"{repeat}_{number}")
                times[mode].append(seconds)
                print(f"run {repeat + 1}/{args.repeats}, diagnostics {mode}: train_runtime {seconds:.2f} s, {result}",
                      flush=True)  # fmt: skip
    base = statistics.median(times["off"])
    print("\n| diagnostics | train_runtime (s), each run | median (s) | overhead |")
    print("|---|---|---|---|")
    for mode, values in times.items():
        median = statistics.median(values)
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {mode} | {runs} | {median:.2f} | {100 * (median / base - 1):+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
