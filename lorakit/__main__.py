"""python -m lorakit run | pack | probe: every run mode of every task, from the command line.

    python -m lorakit run glue --task_name sst2 --glue_dir glue/ --lora_init B     # one run (as run_glue.py)
    python -m lorakit run mymodule:MyTask --my_flag 3                               # one run of a task of one's own
    python -m lorakit pack outputs/sweeps/x/packs/k10_…/pack.json                   # a pack, resumed if it can be
    python -m lorakit probe outputs/sweeps/x/packs/k10_…/pack.json 2                # --pack auto's memory probe

Errors are one line and exit codes a scheduler can read (`lorakit.training.command`).
"""

import json
import logging
import sys
from pathlib import Path

from lorakit.core.errors import ConfigError
from lorakit.core.run_folder import latest_checkpoint
from lorakit.runs import single
from lorakit.runs.pack import run_pack
from lorakit.runs.pack_file import read_pack_file
from lorakit.runs.probe import probe
from lorakit.tasks import get_task
from lorakit.training.command import run_command

USAGE = "usage: python -m lorakit run <task> [flags] | pack <pack.json> | probe <pack.json> K"


def pack(path: Path) -> int:
    """Train the pack of `path`, resuming from the pack's newest complete checkpoint."""

    def prepare():
        task, members = read_pack_file(path)
        checkpoint = latest_checkpoint(path.parent)
        if checkpoint is not None:
            members = [[*member, "--resume_from_checkpoint", str(checkpoint)] for member in members]
        return task, members

    return run_command("lorakit pack", prepare, lambda prepared: run_pack(*prepared, str(path.parent)))


def probe_pack(path: Path, k: str) -> int:
    """Print the peak memory of a pack of the first `k` members of `path`, as one line of JSON."""

    def prepare():
        task, members = read_pack_file(path)
        if not (k.isdigit() and 1 <= int(k) <= len(members)):
            raise ConfigError(f"K: must be between 1 and the pack's {len(members)} members, got {k}")
        return task, members, int(k)

    def measure(prepared) -> int:
        print(json.dumps(probe(*prepared)))
        return 0

    return run_command("lorakit probe", prepare, measure)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "run" and rest:
        try:
            task = get_task(rest[0])
        except ConfigError as err:
            print(f"lorakit run: error: {err}", file=sys.stderr)
            return 2
        return single.main(task, rest[1:], f"lorakit run {rest[0]}")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if command == "pack" and len(rest) == 1:
        return pack(Path(rest[0]))
    if command == "probe" and len(rest) == 2:
        return probe_pack(Path(rest[0]), rest[1])
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
