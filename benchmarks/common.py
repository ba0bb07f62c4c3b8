"""Pieces the benchmark scripts share: a clock over the timed steps (a Trainer callback), a profile of the steps
after them (`KernelTime`), peak memory, a worker's result line printed as soon as it is measured (`Interim`), each
case in its own process (`measure_in_process`), the common options, and the benchmarks document."""

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


class KernelTime:
    """Time the GPU spends in kernels over a window of steps (torch.profiler's CUDA activity), per step, and its share
    of the unprofiled step time: near 1 the step is compute-bound; far below, the GPU waits for the host to launch
    kernels (launch-bound). Memory copies and sets are counted apart; kernels overlapping on several streams are
    summed, so the share can pass 1. A profiler that fails leaves its error in the figures, never the measurement."""

    def __init__(self):
        self.profiler, self.error = None, None

    def start(self) -> None:
        try:  # the profile is a diagnosis: the timing must survive without it
            cuda = torch.cuda.is_available()  # CPU activity only where there is no GPU (a smoke run): no kernels
            activity = torch.profiler.ProfilerActivity.CUDA if cuda else torch.profiler.ProfilerActivity.CPU
            self.profiler = torch.profiler.profile(activities=[activity])
            self.profiler.__enter__()
        except Exception as err:
            self.profiler, self.error = None, f"{type(err).__name__}: {err}"

    def stop(self, steps: int, step_seconds: float) -> dict:
        figures = {"step_ms": round(step_seconds * 1e3, 2)}
        if self.profiler is None:
            return {**figures, "profile_error": self.error or "not started"}
        try:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.profiler.__exit__(None, None, None)
            events = [e for e in self.profiler.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        except Exception as err:
            return {**figures, "profile_error": f"{type(err).__name__}: {err}"}
        copies = [e for e in events if e.name.startswith(("Memcpy", "Memset"))]
        kernels = [e for e in events if not e.name.startswith(("Memcpy", "Memset"))]
        kernel_ms = sum(e.device_time_total for e in kernels) / 1e3 / steps
        return {
            **figures,
            "kernel_ms_per_step": round(kernel_ms, 2),
            "copy_ms_per_step": round(sum(e.device_time_total for e in copies) / 1e3 / steps, 2),
            "kernels_per_step": round(len(kernels) / steps),
            "gpu_busy": round(kernel_ms / (step_seconds * 1e3), 3),
        }


class StepClock(TrainerCallback):
    """Times steps `warmup`+1 … `steps` of a Trainer run: what a plain loop over the same steps times, without the
    Trainer's end-of-run cleanup. `seconds` holds the result, and `on_timed(seconds)` is called with it the moment it
    is known. With `profile` > 0, the `profile` steps after `steps` are profiled (`KernelTime`; the Trainer must run
    them) and `figures` holds the result."""

    def __init__(self, warmup: int, steps: int, device: str, profile: int = 0, on_timed=None):
        self.warmup, self.steps, self.device, self.profile = warmup, steps, device, profile
        self.start = self.seconds = None
        self.kernels, self.figures, self.on_timed = KernelTime(), {}, on_timed

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            synchronize(self.device)
            self.start = time.perf_counter()
        if self.profile and state.global_step == self.steps:
            self.kernels.start()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.steps:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.start
            if self.on_timed is not None:
                self.on_timed(self.seconds)
        if self.profile and state.global_step == self.steps + self.profile:
            self.figures = self.kernels.stop(self.profile, self.seconds / (self.steps - self.warmup))


class Interim:
    """A worker's result line, printed the moment the timed steps end (before any profile), so that a case cut off
    at its timeout while being profiled still reports its rate; the complete line follows at the end."""

    def __init__(self, row: dict, rate: str, units: float, device: str):
        self.row, self.rate, self.units, self.device = row, rate, units, device

    def __call__(self, seconds: float) -> None:
        row = {**self.row, self.rate: round(self.units / seconds, 1), **peak_memory(self.device), "interim": True}
        print(json.dumps(row), flush=True)


def profile_steps(args) -> int:
    """How many steps a case runs after its timed ones to profile them: `--profile_steps`, by default 3 on a GPU and
    none on a CPU."""
    if args.profile_steps is not None:
        return args.profile_steps
    return 3 if args.device == "cuda" else 0


def peak_memory(device: str) -> dict:
    """The CUDA allocator's peaks since the last reset, allocated and reserved, in GiB (NaN on a CPU)."""
    if device != "cuda":
        return {"peak_gib": float("nan"), "reserved_gib": float("nan")}
    return {
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "reserved_gib": round(torch.cuda.max_memory_reserved() / 2**30, 2),
    }


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
    parser.add_argument(
        "--profile_steps", type=int, default=None, help="steps profiled after the timed ones (default: 3 on a GPU)"
    )
    parser.add_argument("--document", type=Path, default=None, help="append the table to this Markdown file")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a worker process: measure this one case
