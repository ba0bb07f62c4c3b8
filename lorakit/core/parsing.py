"""Command lines and `--config file.yaml` into argument dataclasses (the file gives defaults, flags win), with every
error a one-line ConfigError: a bad type, an unknown key or flag, a malformed YAML file."""

import argparse
import copy
import dataclasses
import types
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from lorakit.core.errors import ConfigError


def settings_to_argv(values: dict) -> list[str]:
    """Settings as command-line tokens (lists become several values, booleans true/false, None is left out)."""
    argv = []
    for key, value in values.items():
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        argv += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in items)]
    return argv


def read_config_file(path: str, dataclass_types: tuple) -> list[str]:
    """The YAML file's settings as command-line tokens; unknown keys are an error."""
    if not Path(path).is_file():
        raise ConfigError(f"config: file not found: {path}")
    values = read_yaml(Path(path), "config") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config: {path} must hold a mapping of setting: value")
    known = {f.name for dt in dataclass_types for f in dataclasses.fields(dt) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"config: unknown key(s) {', '.join(unknown)} in {path}")
    return settings_to_argv(values)


def read_yaml(path: Path, what: str):
    """A YAML file's content; an unreadable or malformed file is a one-line error naming it (and the line)."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what}: {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{what}: cannot read {path} ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what}: {path}{where}: not valid YAML ({problem})") from None


def parse_args(dataclass_types: tuple, argv: list[str]) -> tuple:
    """Parse `argv` into the dataclasses; `--config file.yaml` anywhere in argv gives defaults that flags override."""
    argv = list(argv)
    file_argv: list[str] = []
    if "--config" in argv:
        at = argv.index("--config")
        if at + 1 >= len(argv):
            raise ConfigError("config: --config needs a file path")
        file_argv = read_config_file(argv[at + 1], dataclass_types)
        del argv[at : at + 2]
    parser = OneLineParser(dataclass_types)
    try:
        return parser.parse_args_into_dataclasses(args=file_argv + argv)
    except ConfigError:
        raise
    except (ValueError, TypeError, OverflowError) as err:
        raise ConfigError(str(err).splitlines()[0]) from None


class OneLineParser(HfArgumentParser):
    """An argument parser whose errors (a bad type, an unknown choice, a missing value) are a ConfigError, reported
    as one line, not argparse's usage text and exit. No flag may be abbreviated (`--hub_tok` is not `--hub_token`).
    A field's "rule" (`lorakit.core.fields`) is not argparse's."""

    def __init__(self, dataclass_types, **kwargs):
        super().__init__(dataclass_types, allow_abbrev=False, **kwargs)

    def error(self, message: str):
        raise ConfigError(message)

    @staticmethod
    def _parse_dataclass_field(parser, spec: dataclasses.Field):
        if "rule" in spec.metadata:
            spec = copy.copy(spec)
            spec.metadata = types.MappingProxyType({k: v for k, v in spec.metadata.items() if k != "rule"})
        HfArgumentParser._parse_dataclass_field(parser, spec)


class CommandParser(argparse.ArgumentParser):
    """argparse for a tool's command line, its errors a ConfigError (one line) rather than the usage text."""

    def error(self, message: str):
        raise ConfigError(message)
