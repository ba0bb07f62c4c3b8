"""Atomic file writes: readers never see a half-written file (light: no torch, so sweep workers start fast)."""

import json
import os
from pathlib import Path


def replace_atomically(path: Path, write) -> None:
    """Call `write(partial_path)`, then move the result over `path`, so readers never see a half-written file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(partial)
    os.replace(partial, path)


def write_json_atomic(path: Path, payload: dict) -> None:
    replace_atomically(path, lambda p: p.write_text(json.dumps(payload, indent=2, default=str, allow_nan=True) + "\n"))


def write_csv_atomic(frame, path: Path) -> None:
    """A pandas DataFrame as CSV (no index), written atomically."""
    replace_atomically(path, lambda p: frame.to_csv(p, index=False))
