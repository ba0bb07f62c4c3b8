"""The checks a sweep file passes before anything runs: the type and range of every key, each failure one line
naming the key. (Each point's settings are then parsed by the task's own argument dataclasses: `spec.validate`.)"""

import re

from lorakit.core.errors import ConfigError
from lorakit.core.fields import POSITIVE_INT, Range
from lorakit.core.secrets import is_secret_name

TOP_KEYS = {"name", "task", "runner", "base", "grid", "metric", "higher_is_better", "output_root", "local", "slurm"}
TOP_KEYS |= {"pack"}
LOCAL_RULES = {"workers": POSITIVE_INT}
SLURM_RULES = {
    "time_min": POSITIVE_INT,
    "gpus_per_run": Range(low=0, integer=True),
    "cpus_per_run": POSITIVE_INT,
    "mem_gb": POSITIVE_INT,
    "array_parallelism": POSITIVE_INT,
}
SLURM_TEXT = ("partition",)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
OWNED_BY_THE_SWEEP = ("output_dir", "overwrite_output_dir", "resume_from_checkpoint")  # each point's run folder
SCALAR = str | int | float | bool


def check_keys(found: dict, allowed: set, where: str) -> None:
    unknown = sorted(map(str, set(found) - allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")


def check_mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: must be a mapping of setting: value, got {type(value).__name__}")
    return value


def check_numbers(section: dict, rules: dict[str, Range], where: str) -> None:
    for key, rule in rules.items():
        if key in section and not rule.allows(section[key]):
            raise ConfigError(f"{where}.{key}: {rule.describe()}, got {section[key]!r}")


def check_settings(base: dict, grid: dict, where: str) -> None:
    """Settings a point may take: scalar values (or lists of them, for list flags), none that names the run folder
    (the sweep gives each point its own), and no secret in the grid (`check_secrets`)."""
    for key in [*base, *grid]:
        if key in OWNED_BY_THE_SWEEP:
            raise ConfigError(f"{where}: {key} is set by the sweep for each point (runs/<point>); use output_root")
    for key, value in base.items():
        if not isinstance(value, SCALAR | list | None):
            raise ConfigError(f"{where}: base.{key}: must be a value or a list of values, got {type(value).__name__}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid.{key}: must be a non-empty list of values")
        bad = next((v for v in values if not isinstance(v, SCALAR | list)), None)
        if bad is not None:
            raise ConfigError(f"{where}: grid.{key}: values must be scalars (or lists), got {type(bad).__name__}")
        if is_secret_name(str(key)):
            raise ConfigError(f"{where}: grid.{key}: a secret cannot vary across points; set it in base or export it")


def check_sweep_mapping(raw: dict, where: str) -> None:
    """Every top-level key of a sweep file, its type and its range."""
    check_keys(raw, TOP_KEYS, where)
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not NAME.fullmatch(name)):
        raise ConfigError(f"{where}: name: letters, digits, '.', '_' and '-' only (a folder name), got {name!r}")
    for key in ("metric", "output_root"):
        if key in raw and not isinstance(raw[key], str):
            raise ConfigError(f"{where}: {key}: must be a string, got {raw[key]!r}")
    if "higher_is_better" in raw and not isinstance(raw["higher_is_better"], bool):
        raise ConfigError(f"{where}: higher_is_better: must be true or false, got {raw['higher_is_better']!r}")
    local = check_mapping(raw.get("local"), f"{where}: local")
    check_keys(local, {"workers", "gpus"}, f"{where}: local")
    check_numbers(local, LOCAL_RULES, f"{where}: local")
    gpus = local.get("gpus", "auto")
    ids = [str(g) for g in gpus] if isinstance(gpus, list) else []
    listed = isinstance(gpus, list) and all(i.isdigit() for i in ids) and len(set(ids)) == len(ids) and ids
    if not (gpus == "auto" or Range(low=0, integer=True).allows(gpus) or listed):
        raise ConfigError(f"{where}: local.gpus: must be auto, a count, or a list of distinct GPU ids, got {gpus!r}")
    slurm = check_mapping(raw.get("slurm"), f"{where}: slurm")
    check_keys(slurm, {*SLURM_RULES, *SLURM_TEXT, "extra"}, f"{where}: slurm")
    check_numbers(slurm, SLURM_RULES, f"{where}: slurm")
    check_mapping(slurm.get("extra"), f"{where}: slurm.extra")
    if "partition" in slurm and not isinstance(slurm["partition"], str):
        raise ConfigError(f"{where}: slurm.partition: must be a string, got {slurm['partition']!r}")
    grid = check_mapping(raw.get("grid"), f"{where}: grid")
    if not grid:
        raise ConfigError(f"{where}: grid must map each setting to a non-empty list of values")
    check_settings(check_mapping(raw.get("base"), f"{where}: base"), grid, where)
