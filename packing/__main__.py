"""python -m packing <pack.json>: train a pack of run_glue.py or run_llm.py configurations, resuming from the pack's
newest complete checkpoint. The file (the sweep tool writes it) holds {"runner": "run_glue.py" or "run_llm.py",
"members": [argv, …]}; the pack's checkpoints go to the file's folder. Errors and exit codes are a runner's
(`finetune.command`)."""

import importlib
import logging
import sys
from pathlib import Path

from finetune.command import run_command
from finetune.errors import ConfigError
from finetune.run_folder import latest_checkpoint, read_json_file

RUNNERS = {"run_glue.py": "packing.glue", "run_llm.py": "packing.llm"}  # runner → module with its run_packed


def read_pack_file(path: Path) -> tuple[str, list[list[str]]]:
    """The runner's module and the members' argvs of a pack file; a malformed one is a one-line error."""
    spec = read_json_file(path)
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: not a pack file (a JSON object with runner and members)")
    if spec.get("runner") not in RUNNERS:
        raise ConfigError(f"{path}: runner must be {' or '.join(RUNNERS)}, got {spec.get('runner')!r}")
    members = spec.get("members")
    if not isinstance(members, list) or not members or not all(isinstance(m, list) for m in members):
        raise ConfigError(f"{path}: members must be a non-empty list of argument lists")
    return RUNNERS[spec["runner"]], [[str(a) for a in member] for member in members]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m packing <pack.json>", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    spec_path = Path(argv[0])

    def prepare():
        module, members = read_pack_file(spec_path)
        checkpoint = latest_checkpoint(spec_path.parent)
        if checkpoint is not None:
            members = [[*member, "--resume_from_checkpoint", str(checkpoint)] for member in members]
        return module, members

    def train(prepared) -> int:
        module, members = prepared
        return importlib.import_module(module).run_packed(members, str(spec_path.parent))

    return run_command("packing", prepare, train)


if __name__ == "__main__":
    sys.exit(main())
