"""``--pack auto`` (or ``pack: auto``): each group of points that may share a pack gets the largest pack size that
fits the memory of the device its workers train on.

The size comes from `lorakit.packing.probe`: packs of 1 and 2 of the group's points train a few steps and evaluate one
batch, in fresh processes that see the device a worker would see, and the peak memory is extrapolated to K
configurations. The budget is ``--pack-memory`` GiB, else the device's whole memory (for CPU workers: the machine's
memory shared among them, or a SLURM run's ``mem_gb``). Measurements are kept in
``<output_root>/packs/probe_<id>/probe.json``, one per distinct setting (seeds share one) and kind of device, so a
sweep run again does not measure again.
"""

import hashlib
import json
import shutil
import subprocess
import sys

from lorakit.core.atomic import write_json_atomic
from lorakit.core.errors import ConfigError
from lorakit.core.run_folder import read_json_file
from lorakit.packing.probe import fit, probe_in_subprocess
from lorakit.packing.trainer import PACKABLE
from lorakit.sweeps.spec import Job, Point, Sweep

GIB = 2**30
NOT_MEMORY = {"seed", "data_seed"}  # settings that change what a pack learns, not what it holds


def device_kind(gpu: str | None) -> str:
    """What the probe will run on, named before it runs: "cpu", or the GPU's name (nvidia-smi), else "cuda"."""
    if gpu is None:
        return "cpu"
    if shutil.which("nvidia-smi"):
        query = ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", gpu]
        named = subprocess.run(query, capture_output=True, text=True)
        if named.returncode == 0 and named.stdout.strip():
            return named.stdout.strip()
    return "cuda"


class AutoPack:
    """A pack size per group of points (`Sweep.jobs` calls it with each group), measured once per setting."""

    def __init__(self, sweep: Sweep, slots: list, memory_gib: float | None, needs_gpu=False, default_gib=None):
        self.sweep, self.memory_gib, self.default_gib = sweep, memory_gib, default_gib
        self.gpu, self.sharing = slots[0], len(slots)  # GPU slots: one run each; CPU slots share the machine
        self.needs_gpu, self.device = needs_gpu, device_kind(self.gpu)  # one nvidia-smi call per sweep run
        self.sizes: dict[str, int] = {}  # what fits, before a group's own size caps it

    def __call__(self, members: list[Point]) -> int:
        if len(members) < 2:
            return 1
        shared = {k: v for k, v in members[0].settings.items() if k not in PACKABLE | NOT_MEMORY}
        key = [self.sweep.identity, shared, self.device]
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
        if digest not in self.sizes:
            self.sizes[digest] = self.size(members, digest)
        return min(self.sizes[digest], len(members))

    def budget(self, figures: dict) -> tuple[float, str]:
        if self.memory_gib is not None:
            return self.memory_gib * GIB, f"--pack-memory {self.memory_gib:g} GiB"
        if self.default_gib is not None:
            return self.default_gib * GIB, f"{self.default_gib:g} GiB (slurm mem_gb)"
        on_gpu = figures["measured_by"] == "CUDA allocator"
        budget = figures["device_bytes"] / (1 if on_gpu else self.sharing)
        return budget, f"{budget / GIB:.1f} GiB of {figures['device']}"

    def size(self, members: list[Point], digest: str) -> int:
        figures = self.measured(members, digest)
        if self.needs_gpu and figures["measured_by"] != "CUDA allocator":
            raise ConfigError(
                "pack auto: the runs train on GPUs, but this machine measured packs on its "
                f"{figures['device']}; give --pack K, or run the sweep tool where it sees the GPUs' kind"
            )
        budget, where = self.budget(figures)
        peaks = {int(k): v for k, v in figures["peaks"].items()}
        k, line = fit(peaks, budget)
        measured = ", ".join(f"{n}: {v / GIB:.2f} GiB" for n, v in sorted(peaks.items()))
        if 2 not in peaks:
            measured += ", 2: out of memory"
        print(
            f"pack auto ({members[0].values}…): peaks {measured} ({figures['measured_by']}, {figures['device']}); "
            f"{k} per pack fit within {where} (estimate {line['estimate_bytes'] / GIB:.2f} GiB)",
            file=sys.stderr,
        )
        if peaks[1] > budget:
            print(f"pack auto: warning: even one configuration measured above {where}", file=sys.stderr)
        return k

    def measured(self, members: list[Point], digest: str) -> dict:
        """The probe's figures for this setting, measured now unless kept from an earlier run. A pack of 2 that ran
        out of memory leaves the peak of 1 alone (packs of 1)."""
        folder = self.sweep.output_root / "packs" / f"probe_{digest}"
        kept = read_json_file(folder / "probe.json")
        if isinstance(kept, dict) and isinstance(kept.get("peaks"), dict) and "1" in kept["peaks"]:
            return kept  # a kept file that does not parse is measured again
        probe = Job(members[:2], folder)
        probe.write_pack_file()
        results = [probe_in_subprocess(folder / "pack.json", 1, self.gpu)]
        if results[0].get("out_of_memory"):  # no pack of 2 to measure
            raise ConfigError(f"pack auto: one configuration of {members[0].values} does not fit on {self.gpu}")
        results.append(probe_in_subprocess(folder / "pack.json", 2, self.gpu))
        keep = ("device", "device_bytes", "measured_by")
        peaks = {str(r["k"]): r["peak_bytes"] for r in results if not r.get("out_of_memory")}
        figures = {**{n: results[0][n] for n in keep}, "peaks": peaks}
        write_json_atomic(folder / "probe.json", figures)
        return figures
