"""JSONL files for the LM tasks: one JSON object per line, each bad line a one-line error naming file and line."""

import json
from pathlib import Path

from finetune.arguments import ConfigError


def read_jsonl(path: Path, required: tuple[tuple[str, ...], ...] = (), what: str = "") -> list[dict]:
    """Rows of a JSONL file; each must have one key of every alternative in `required` (else a one-line error)."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path} line {number}: not JSON ({err.msg})") from None
        for keys in required:
            if not isinstance(row, dict) or not any(k in row for k in keys):
                has = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                raise ConfigError(f"{path} line {number}: {what} row lacks field {' or '.join(keys)} (has: {has})")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows
