"""``--pack auto`` (or ``pack: auto``): each group of points that may share a pack gets the largest pack size that
fits the memory of the device its workers train on.

The size comes from `packing.probe`: packs of 1 and 2 of the group's points train a few steps, in fresh processes
that see the device a worker would see, and the peak memory is extrapolated to K configurations. The budget is
``--pack-memory`` GiB, else the device's whole memory (for CPU workers: the machine's memory shared among them).
Measurements are kept in ``<output_root>/packs/probe_<id>/probe.json``, one per distinct setting (seeds share
one), so a sweep run again does not measure again.
"""

import hashlib
import json
import sys

from finetune.arguments import ConfigError
from finetune.atomic import write_json_atomic
from sweeps.spec import Job, Point, Sweep

GIB = 2**30
NOT_MEMORY = {"seed", "data_seed"}  # settings that change what a pack learns, not what it holds


class AutoPack:
    """A pack size per group of points (`Sweep.jobs` calls it with each group), measured once per setting."""

    def __init__(self, sweep: Sweep, slots: list[str | None], memory_gib: float | None, needs_gpu: bool = False):
        self.sweep, self.memory_gib = sweep, memory_gib
        self.gpu, self.sharing = slots[0], len(slots)  # GPU slots: one run each; CPU slots share the machine
        self.needs_gpu = needs_gpu
        self.sizes: dict[str, int] = {}

    def __call__(self, members: list[Point]) -> int:
        if len(members) < 2:
            return 1
        from packing.trainer import PACKABLE

        shared = {k: v for k, v in members[0].settings.items() if k not in PACKABLE | NOT_MEMORY}
        key = hashlib.sha1(json.dumps([self.sweep.runner, shared], sort_keys=True, default=str).encode())
        digest = key.hexdigest()[:10]
        if digest not in self.sizes:
            self.sizes[digest] = self.size(members, digest)
        return self.sizes[digest]

    def size(self, members: list[Point], digest: str) -> int:
        from packing.probe import fit

        figures = self.measured(members, digest)
        if self.needs_gpu and figures["measured_by"] != "CUDA allocator":
            raise ConfigError(
                "pack auto: the runs train on GPUs, but this machine measured packs on its "
                f"{figures['device']}; give --pack K, or run the sweep tool where it sees the GPUs' kind"
            )
        if self.memory_gib is not None:
            budget, where = self.memory_gib * GIB, f"--pack-memory {self.memory_gib:g} GiB"
        else:
            budget = figures["device_bytes"] / (1 if figures["measured_by"] == "CUDA allocator" else self.sharing)
            where = f"{budget / GIB:.1f} GiB of {figures['device']}"
        peaks = {int(k): v for k, v in figures["peaks"].items()}
        k, line = fit(peaks, budget, len(members))
        measured = ", ".join(f"{n}: {v / GIB:.2f} GiB" for n, v in sorted(peaks.items()))
        print(
            f"pack auto ({members[0].values}…): peaks {measured} ({figures['measured_by']}, {figures['device']}); "
            f"{k} of {len(members)} per pack within {where} (estimate {line['estimate_bytes'] / GIB:.2f} GiB)",
            file=sys.stderr,
        )
        if peaks[1] > budget:
            print(f"pack auto: warning: even one configuration measured above {where}", file=sys.stderr)
        return k

    def measured(self, members: list[Point], digest: str) -> dict:
        """The probe's figures for this setting, measured now unless kept from an earlier run."""
        from packing.probe import probe_in_subprocess

        folder = self.sweep.output_root / "packs" / f"probe_{digest}"
        kept = folder / "probe.json"
        if kept.is_file():
            return json.loads(kept.read_text())
        probe = Job(members[:2], folder)
        probe.write_pack_file()
        results = [probe_in_subprocess(folder / "pack.json", k, self.gpu) for k in (1, 2)]
        keep = ("device", "device_bytes", "measured_by")
        figures = {**{n: results[0][n] for n in keep}, "peaks": {str(r["k"]): r["peak_bytes"] for r in results}}
        write_json_atomic(kept, figures)
        return figures
