"""Pieces the benchmark scripts share: a Trainer clock over the timed steps, device sync, and the benchmarks
document."""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepClock(TrainerCallback):
    """Times steps `warmup`+1 … `steps` of a Trainer run: what a plain loop over the same steps times, without the
    Trainer's end-of-run cleanup. `seconds` holds the result after training."""

    def __init__(self, warmup: int, steps: int, device: str):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.start = self.seconds = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.steps:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.start


def append_section(path: Path, title: str, module: str, device: str, body: str) -> None:
    """Append a Markdown section to the benchmarks document (created if missing): the title with the date and the
    machine, the command that was run, then `body`."""
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    command = f"python -m {module} " + " ".join(sys.argv[1:])
    section = f"## {title}, {time.strftime('%Y-%m-%d')} on {name}\n\n`{command}`\n\n{body}\n"
    old = path.read_text() if path.is_file() else "# Benchmarks\n\nEach section: the command, the date, the machine.\n"
    path.write_text(old.rstrip("\n") + "\n\n" + section)


def measure_in_process(module: str, case: str, argv: list[str]) -> dict:
    """Run `python -m module --one case *argv` from the project root: one case in its own process (its own peak
    memory), which prints its result as the last line of JSON. A failed case stops the benchmark."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", module, "--one", case, *argv]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"case {case} failed (exit {done.returncode})")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def add_run_arguments(parser: argparse.ArgumentParser, steps: int, warmup: int) -> None:
    """The options every benchmark script takes: steps, warmup, device, the document, and the worker's case."""
    parser.add_argument("--steps", type=int, default=steps, help="training steps per case")
    parser.add_argument("--warmup", type=int, default=warmup, help="steps left out of the timing")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--document", type=Path, default=None, help="append the table to this Markdown file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a worker process: measure this one case
