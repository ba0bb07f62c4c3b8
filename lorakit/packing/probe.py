"""How many configurations fit in one pack: measure the peak memory of packs of 1 and 2 and extrapolate.

    python -m lorakit probe <pack.json> K      # trains the first K members 2 steps; prints {"peak_bytes": …}

A pack's memory is close to linear in its size K: the frozen base, once, plus per configuration its adapter, its
gradients and optimizer state, and its slice of the activations. The probe trains packs of 1 and 2 for a few steps
on the longest examples of the training set, padded as the run pads them (so no later batch is longer), runs one
packed evaluation batch of the longest held-out examples, then `fit` solves for the largest K within a memory budget.

Peak memory is read where the pack trains: on a GPU, the CUDA allocator's peak reservation; on a CPU, the peak of
the bytes held by live tensors (counted by `TensorBytes`), which leaves out the Python process's own few hundred
MB. Nothing is written to the members' run folders.
"""

import copy
import json
import math
import os
import subprocess
import sys
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lorakit.core.errors import ConfigError
from lorakit.core.project import with_project_on_path

HEADROOM = 0.9  # of the budget: the CUDA context, allocator fragmentation, and batches longer than the probe's
STEPS = 2  # the first step allocates the optimizer state; the second is a steady step


class TensorBytes(TorchDispatchMode):
    """While active: the bytes held by live tensor storages, and their peak. Storages that exist before are counted
    when passed in (`objects`: tensors or modules), or as soon as an operation returns them."""

    def __init__(self, *objects):
        super().__init__()
        self.live, self.now, self.peak = set(), 0, 0
        for item in objects:
            for tensor in item.state_dict(keep_vars=True).values() if isinstance(item, torch.nn.Module) else [item]:
                self.add(tensor)

    def add(self, tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()  # one Python object per storage while it lives, finalized as it dies
        key = id(storage)
        if key in self.live:
            return
        size = storage.nbytes()
        self.live.add(key)
        self.now += size
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self.drop, key, size)

    def drop(self, key: int, size: int) -> None:
        if key in self.live:
            self.live.discard(key)
            self.now -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            self.add(tensor)
        return out


def probe_args(train_args, output_dir: str, steps: int = STEPS):
    """`train_args` for a probe: `steps` steps into a scratch folder, with no evaluation, checkpoint or logging, and
    no divergence (a frozen adapter would hold no optimizer state and lower the peak)."""
    args = copy.copy(train_args)
    args.output_dir, args.max_steps, args.resume_from_checkpoint = output_dir, steps, None
    args.eval_strategy = args.save_strategy = args.logging_strategy = "no"
    args.report_to, args.disable_tqdm = [], True
    args.gradient_accumulation_steps = 1  # memory is that of one micro-batch
    args.divergence_loss_threshold = math.inf
    return args


def longest(dataset, count: int) -> torch.utils.data.Subset:
    """The `count` longest items of `dataset` (by their input_ids), repeated if it has fewer."""
    lengths = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    order = sorted(range(len(dataset)), key=lambda i: -lengths[i])
    return torch.utils.data.Subset(dataset, [order[i % len(order)] for i in range(count)])


def train_and_evaluate(trainer) -> None:
    """The probe's steps: `trainer`'s training steps, then one packed evaluation batch (the longest, at the
    evaluation batch size) as the packed evaluations run it, when the trainer has an evaluation set."""
    trainer.train()
    if trainer.eval_dataset is None:
        return
    trainer.model.eval()
    with torch.no_grad():
        batch = next(iter(trainer.get_eval_dataloader()))
        trainer.model(**batch)


def measure(trainer) -> dict:
    """Run `trainer` (a probe's) and return its peak memory in bytes, how it was measured, and the device's whole
    memory; `out_of_memory` when the pack did not fit."""
    device = trainer.args.device
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        properties = torch.cuda.get_device_properties(device)
        figures = {"measured_by": "CUDA allocator", "device": properties.name, "device_bytes": properties.total_memory}
        try:
            train_and_evaluate(trainer)
        except torch.OutOfMemoryError:
            return {**figures, "peak_bytes": None, "out_of_memory": True}
        return {**figures, "peak_bytes": torch.cuda.max_memory_reserved(device)}
    counter = TensorBytes(trainer.model)
    with counter:
        train_and_evaluate(trainer)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"peak_bytes": counter.peak, "measured_by": "live tensor bytes", "device": "CPU", "device_bytes": memory}


def probe_in_subprocess(pack_file: Path, k: int, gpu: str | None = None) -> dict:
    """`probe` in a fresh process (its memory is the pack's alone) that sees GPU `gpu` only, or none for None;
    raises ConfigError naming its last line of output, all of which goes to probe_<k>.log beside the pack file."""
    env = with_project_on_path({**os.environ, "CUDA_VISIBLE_DEVICES": gpu if gpu is not None else ""})
    command = [sys.executable, "-m", "lorakit", "probe", str(pack_file), str(k)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        log = Path(pack_file).parent / f"probe_{k}.log"
        log.write_text(done.stdout + done.stderr)
        said = ([line for line in done.stderr.splitlines() if line.strip()] or ["no output"])[-1].strip()
        raise ConfigError(f"pack auto: measuring a pack of {k} failed ({said}); its output is in {log}")
    return json.loads(lines[-1])


def fit(peaks: dict[int, int], budget_bytes: float) -> tuple[int, dict]:
    """The largest pack size whose extrapolated peak is within HEADROOM of `budget_bytes` (at least 1), from the peaks
    measured for packs of 1 and 2 (only 1: a pack of 2 did not fit); with the fitted line and the pack's estimate."""
    if 2 not in peaks:
        return 1, {"base_bytes": peaks[1], "per_configuration_bytes": None, "estimate_bytes": peaks[1]}
    per = peaks[2] - peaks[1]
    if per <= 0:
        raise ConfigError(
            f"pack auto: a pack of 2 measured no more than a pack of 1 ({peaks[2]} vs {peaks[1]} bytes), so no size "
            "can be extrapolated; give --pack K"
        )
    base = peaks[1] - per
    k = max(1, math.floor((HEADROOM * budget_bytes - base) / per))
    return k, {"base_bytes": base, "per_configuration_bytes": per, "estimate_bytes": base + k * per}
