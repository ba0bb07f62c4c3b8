"""Readers of the files a user hands the runners (TSV, CSV, JSON, JSONL, text): any malformation is a one-line
ConfigError naming the file, and the line where there is one, never a traceback."""

import csv
import io
import json
from pathlib import Path

from lorakit.core.errors import ConfigError


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """A text file's content; unreadable or not UTF-8 is a one-line error naming the file and where it breaks."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from None
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path} line {line}: not UTF-8 text (byte {data[err.start]:#04x})") from None


def refuse_constant(name: str):
    raise ValueError(f"{name} is not a number a file may hold")


def parse_json(text: str, path: Path, line: int | None = None):
    """JSON as the standard says it, from `path` (at `line`, for JSONL): anything else, NaN and Infinity included,
    and nesting too deep to read, is a one-line error naming the file and line."""
    try:
        return json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} line {line or err.lineno}: not JSON ({err.msg})") from None
    except RecursionError:
        raise ConfigError(f"{path} line {line or 1}: not JSON (nested too deeply)") from None
    except ValueError as err:
        raise ConfigError(f"{path} line {line or 1}: {err}") from None


def nonempty_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) for every line with text, a byte-order mark and carriage returns dropped."""
    text = read_text(path, "utf-8-sig")
    return [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]


def read_jsonl(path: Path, required: tuple[tuple[str, ...], ...] = (), what: str = "") -> list[dict]:
    """Rows of a JSONL file, each a JSON object with one key of every alternative in `required`."""
    rows = []
    for number, line in nonempty_lines(path):
        row = parse_json(line, path, number)
        if not isinstance(row, dict):
            raise ConfigError(f"{path} line {number}: a row must be a JSON object, got {type(row).__name__}")
        for keys in required:
            if not any(k in row for k in keys):
                has = ", ".join(row) or "nothing"
                raise ConfigError(f"{path} line {number}: {what} row lacks field {' or '.join(keys)} (has: {has})")
        rows.append(row)
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


def read_json_records(path: Path) -> list[dict]:
    """Rows of a .json file: a JSON list of objects, or JSON Lines (one object a line)."""
    text = read_text(path, "utf-8-sig")
    if not text.lstrip().startswith("["):
        return read_jsonl(path)
    rows = parse_json(text, path)
    bad = next((n for n, row in enumerate(rows, start=1) if not isinstance(row, dict)), None)
    if bad is not None:
        raise ConfigError(f"{path}: row {bad} must be a JSON object, got {type(rows[bad - 1]).__name__}")
    if not rows:
        raise ConfigError(f"{path}: no rows")
    return rows


def read_csv_rows(path: Path, header: bool) -> list:
    """Rows of a CSV file: dicts keyed by its header row, or lists when it has none."""
    text = read_text(path, "utf-8-sig")
    try:
        rows = list(csv.DictReader(io.StringIO(text)) if header else csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise ConfigError(f"{path}: not valid CSV ({err})") from None
    rows = [row for row in rows if row]
    if not rows:
        raise ConfigError(f"{path}: no rows" + (" below its header" if header else ""))
    return rows


def text_field(row: dict, key: str, where: str) -> str:
    """A row's text field: a string, or a number (written as text); anything else (null, a list) is an error."""
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ConfigError(f"{where}: field {key!r} must be text, got {type(value).__name__}")
    return str(value)
