"""The memory probe of a pack (`--pack auto`): the first K configurations of a pack file, trained a few steps on their
longest examples in this process, and their peak memory (`lorakit.packing.probe.measure`)."""

import tempfile

from lorakit.packing.probe import measure
from lorakit.runs.pack import probe_trainer
from lorakit.tasks import as_task
from lorakit.tasks.base import Task


def probe(task: Task | str, members: list[list[str]], k: int) -> dict:
    """The peak memory of a pack of the first `k` of `members` (argvs of one task), measured in this process."""
    with tempfile.TemporaryDirectory(prefix="pack-probe-") as scratch:
        members = [[*argv, "--output_dir", f"{scratch}/member{i}"] for i, argv in enumerate(members[:k])]
        return {"k": k, **measure(probe_trainer(as_task(task), members, scratch))}
