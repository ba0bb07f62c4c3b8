"""python -m packing <pack.json>: train a pack of run_glue.py or run_llm.py configurations, resuming from the pack's
newest checkpoint. The file (the sweep tool writes it) holds {"runner": "run_glue.py" or "run_llm.py", "members":
[argv, …]}; the pack's checkpoints go to the file's folder."""

import importlib
import json
import logging
import sys
from pathlib import Path

from finetune.arguments import ConfigError
from finetune.embedded import FetchError

RUNNERS = {"run_glue.py": "packing.glue", "run_llm.py": "packing.llm"}  # runner → module with its run_packed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m packing <pack.json>", file=sys.stderr)
        return 2
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    from sweeps.worker import latest_checkpoint

    spec_path = Path(argv[0])
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        print(f"packing: error: {spec_path}: {err}", file=sys.stderr)
        return 2
    if spec.get("runner") not in RUNNERS:
        known = " or ".join(RUNNERS)
        print(f"packing: error: {spec_path}: runner must be {known}, got {spec.get('runner')!r}", file=sys.stderr)
        return 2
    members = spec["members"]
    checkpoint = latest_checkpoint(spec_path.parent)
    if checkpoint is not None:
        members = [[*member, "--resume_from_checkpoint", str(checkpoint)] for member in members]
    try:
        return importlib.import_module(RUNNERS[spec["runner"]]).run_packed(members, str(spec_path.parent))
    except (ConfigError, FetchError) as err:
        print(f"packing: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
