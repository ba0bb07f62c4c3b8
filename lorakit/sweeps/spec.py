"""A sweep file: which task, fixed settings, a grid, the metric to compare, and where and how to run.

    task: glue                          # or lm, or module:Class (a task of one's own); `runner: run_glue.py` also
    base: {config: launch/roberta_large_glue.yaml, task_name: sst2}   # settings every run shares
    grid: {learning_rate: [1e-5, 2e-5], lora_init: [A, B], seed: [0, 1, 2]}
    metric: eval_accuracy               # the final metric the report compares (see `Sweep.metric`)
    local: {workers: 2}                 # local backend: CPU workers (GPUs are used one run each when visible)
    slurm: {partition: gpu, time_min: 120, gpus_per_run: 1, array_parallelism: 8}

Every point is parsed by the task's own argument dataclasses before anything starts; each gets a stable id (a hash
of its task and settings) and the output directory ``<output_root>/runs/<readable name>_<id>``.
"""

import dataclasses
import functools
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lorakit.core.atomic import write_json_atomic
from lorakit.core.errors import ConfigError
from lorakit.core.parsing import read_yaml, settings_to_argv
from lorakit.core.project import clone_file
from lorakit.core.secrets import is_secret_name, redact_settings
from lorakit.packing.trainer import PACKABLE
from lorakit.sweeps.checks import NAME, OWNED_BY_THE_SWEEP, check_sweep_mapping
from lorakit.tasks import get_task, task_spec

SECRET_ENVIRONMENT = {"hub_token": "HF_TOKEN"}  # a secret in `base` reaches the runs through the environment
WHERE_IT_WRITES = ("output_dir", "logging_dir", "run_name")
READABLE_CHARS = 96  # of a point's folder name, before its id
LOWER_IS_BETTER = ("loss", "perplexity", "ppl", "error")  # metric names whose best is the lowest
GPU_ONLY_FLAGS = ("fp16", "bf16", "load_in_4bit", "load_in_8bit")
GPU_FLAGS_OFF = [token for flag in GPU_ONLY_FLAGS for token in (f"--{flag}", "false")]  # to parse on a CPU machine


def project_path(path: str) -> Path:
    """A path of a sweep file: absolute as given; relative, the clone's file if it has one (launch/…), else the
    caller's (runs start in the folder the sweep was started from)."""
    return Path(path) if Path(path).is_absolute() else clone_file(path) or Path(path)


SHORT_NAMES = {"learning_rate": "lr", "lora_init": "init", "loraplus_lr_ratio": "ratio", "task_name": "task"}


@dataclass
class Point:
    """One run of the sweep: its grid values, all its settings, its id and its directory."""

    values: dict
    settings: dict
    run_id: str
    run_dir: Path
    task: str  # its spec: a registered name or module:Class

    def argv(self) -> list[str]:
        """The task's arguments; a relative ``config`` recipe path is the clone's (launch/…) where it has one,
        other relative paths are the caller's, as runs start in the folder `run` was started from."""
        settings = dict(self.settings)
        if settings.get("config"):
            settings["config"] = str(project_path(settings["config"]))
        return [*settings_to_argv(settings), "--output_dir", str(self.run_dir)]

    def command(self, python: str) -> list[str]:
        """The command line that runs this point (the python interpreter given): the task's script in a clone,
        else (an installed lorakit, a task of one's own) `python -m lorakit run <task>`."""
        script = get_task(self.task).script
        script = clone_file(script) if script else None
        runs = [str(script)] if script else ["-m", "lorakit", "run", self.task]
        return [python, *runs, *self.argv()]

    def setting(self, key: str, default=None):
        """A setting as given: in the sweep file, else in its `config` recipe, else `default`."""
        if key in self.settings:
            return self.settings[key]
        config = self.settings.get("config")
        if config:
            recipe = _recipe(project_path(config))
            if key in recipe:
                return recipe[key]
        return default


@functools.cache
def _recipe(path: Path) -> dict:
    """A `config` recipe's settings, read once however many points share it."""
    recipe = read_yaml(path, "config") if path.is_file() else None
    return recipe if isinstance(recipe, dict) else {}


@dataclass
class Job:
    """What one worker runs: a single point, or a pack of points trained together on one base (`packing`)."""

    points: list[Point]
    pack_dir: Path | None = None

    @property
    def run_dirs(self) -> list[Path]:
        return [p.run_dir for p in self.points]

    def command(self, python: str) -> list[str]:
        if self.pack_dir is None:
            return self.points[0].command(python)
        return [python, "-m", "lorakit", "pack", str(self.pack_dir / "pack.json")]

    def write_pack_file(self) -> None:
        """The pack's task and members for `python -m lorakit pack` (rewritten each time; the members never
        change)."""
        if self.pack_dir is not None:
            self.pack_dir.mkdir(parents=True, exist_ok=True)
            members = [p.argv() for p in self.points]
            write_json_atomic(self.pack_dir / "pack.json", {"task": self.points[0].task, "members": members})


@dataclass
class Sweep:
    name: str
    task: str  # its spec: a registered name or module:Class
    base: dict
    grid: dict
    metric: str
    higher_is_better: bool
    output_root: Path
    local: dict = field(default_factory=dict)
    slurm: dict = field(default_factory=dict)
    path: Path | None = None
    pack: int | str = 1  # or "auto"

    def jobs(self, points: list[Point], pack=None) -> list[Job]:
        """`points` as jobs: packs of up to `pack` (default: the file's) points that differ only in what a pack
        may vary (learning rate, init scheme, LoRA+ ratio), in grid order; single points otherwise. `pack` may be
        a function of each group's points (`lorakit.sweeps.autopack.AutoPack`)."""
        size = self.pack if pack is None else pack
        if size == "auto":
            raise ConfigError("pack: auto is sized by `python -m lorakit.sweeps run`, which measures the packs")
        if not callable(size) and size <= 1:
            return [Job([p]) for p in points]
        groups: dict[str, list[Point]] = {}
        singles = []
        for point in points:
            if point.setting("lora_init", "A") not in ("A", "B"):  # PEFT's own schemes are not packed
                singles.append(Job([point]))
                continue
            if str(point.setting("fp16", False)).lower() == "true":
                raise ConfigError(
                    f"pack: point {point.values} trains in fp16, whose one loss scale a pack would share; "
                    "set fp16: false and bf16: true in the sweep's base (or run it unpacked)"
                )
            shared = {k: v for k, v in point.settings.items() if k not in PACKABLE}
            groups.setdefault(json.dumps(shared, sort_keys=True, default=str), []).append(point)
        jobs = []
        for members in groups.values():
            step = size(members) if callable(size) else size
            for start in range(0, len(members), step):
                chunk = members[start : start + step]
                if len(chunk) == 1:
                    jobs.append(Job(chunk))
                    continue
                digest = hashlib.sha1(" ".join(p.run_id for p in chunk).encode()).hexdigest()[:10]
                jobs.append(Job(chunk, self.output_root / "packs" / f"k{len(chunk)}_{digest}"))
        return jobs + singles

    @property
    def identity(self) -> str:
        """The task as ids and cache keys name it: a built-in task's script (as older sweeps named their runner, so
        their run ids and measured pack sizes hold), else its spec."""
        return get_task(self.task).script or self.task

    def points(self) -> list[Point]:
        keys = list(self.grid)
        points = []
        for combo in itertools.product(*(self.grid[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            settings = {**self.base, **values}
            digest = hashlib.sha1(json.dumps([self.identity, settings], sort_keys=True, default=str).encode())
            run_id = digest.hexdigest()[:10]
            readable = "_".join(f"{SHORT_NAMES.get(k, k)}{v}" for k, v in values.items()).replace("/", "-")
            readable = readable[
                :READABLE_CHARS
            ]  # a long value (a path) must not make the name too long; the id is unique
            run_dir = self.output_root / "runs" / f"{readable}_{run_id}"
            if run_id not in {p.run_id for p in points}:  # a value listed twice is one run
                points.append(Point(values, settings, run_id, run_dir, self.task))
        return points


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file (`lorakit.sweeps.checks`; a malformed file, an unknown key, a bad value or a task
    we do not ship is a one-line error). A secret in `base` (hub_token) goes to the environment the runs inherit, not
    into any file or command line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep: file not found: {path}")
    raw = read_yaml(path, "sweep") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"sweep: {path} must hold a mapping")
    check_sweep_mapping(raw, str(path))
    if "task" in raw and "runner" in raw:
        raise ConfigError(f"{path}: give task or runner (its older spelling), not both")
    named = raw.get("task") or raw.get("runner")
    if not isinstance(named, str):
        raise ConfigError(f"{path}: task: name the sweep's task (glue, lm, or module:Class), got {named!r}")
    task = get_task(named)
    base = dict(raw.get("base") or {})
    for key in [k for k in base if is_secret_name(k)]:
        if key not in SECRET_ENVIRONMENT:
            raise ConfigError(f"{path}: base.{key}: the runners take no such secret; export it in the environment")
        secret = base.pop(key)
        if secret:
            os.environ[SECRET_ENVIRONMENT[key]] = str(secret)
    name = raw.get("name") or path.stem
    if not NAME.fullmatch(name):
        raise ConfigError(f"{path}: the sweep's name {name!r} (its file's) is not a plain folder name; set name:")
    root = Path(raw.get("output_root") or Path("outputs") / "sweeps" / name).resolve()  # from where `run` was started
    pack = check_pack(raw.get("pack", 1), str(path))
    metric = raw.get("metric", task.sweep_metric)
    higher = task.sweep_higher_is_better if "metric" not in raw else not any(w in metric for w in LOWER_IS_BETTER)
    return Sweep(
        name=name,
        task=task_spec(task),
        base=base,
        grid=raw["grid"],
        metric=metric,
        higher_is_better=raw.get("higher_is_better", higher),
        output_root=root,
        local=raw.get("local") or {},
        slurm=raw.get("slurm") or {},
        path=path,
        pack=pack,
    )


def check_pack(pack, where: str) -> int | str:
    """A pack size: a positive integer, or "auto" (the largest that fits the device's memory; both runners train
    packs)."""
    if pack == "auto":
        return pack
    if isinstance(pack, str) and pack.isdigit():
        pack = int(pack)
    if not isinstance(pack, int) or isinstance(pack, bool) or pack < 1:
        raise ConfigError(f"{where}: pack must be a positive integer or auto, got {pack!r}")
    return pack


def parse_point(sweep: Sweep, point: Point):
    """The point's settings parsed by its task (its named argument sets). Without a visible GPU, GPU-only flags are
    checked for their type only."""
    argv, task = point.argv(), get_task(sweep.task)
    if not torch.cuda.is_available():
        argv += [token for flag in GPU_ONLY_FLAGS if task.declares(flag) for token in (f"--{flag}", "false")]
    return task.parse(argv)


def validate(sweep: Sweep) -> list[Point]:
    """Parse every point; the first bad one is a one-line error naming the point. A `config` recipe may not set what
    the sweep owns, and two points whose settings parse the same (1e-3 and 0.001) are one point written twice."""
    points, seen = sweep.points(), {}
    for point in points:
        owned = [k for k in OWNED_BY_THE_SWEEP if point.setting(k) is not None and k not in point.settings]
        if owned:
            raise ConfigError(f"sweep point {point.values}: its config recipe sets {owned[0]}, which the sweep owns")
        try:
            parsed = parse_point(sweep, point)
        except ConfigError as err:
            raise ConfigError(f"sweep point {point.values}: {err}") from None
        key = parsed_settings(parsed.sections().values())
        if key in seen:
            raise ConfigError(f"sweep points {seen[key]} and {point.values} are the same settings written twice")
        seen[key] = point.values
    return points


def parsed_settings(parsed) -> str:
    """Every parsed field of a point but where it writes, as one comparable string."""
    fields = [
        {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init and f.name not in WHERE_IT_WRITES}
        for obj in parsed
    ]
    return json.dumps(fields, sort_keys=True, default=str)


def fixed_values(sweep: Sweep) -> dict:
    """Task, init, learning rate and LoRA+ ratio as the task resolves them (defaults included), for the report's
    columns that the grid leaves fixed."""
    args = parse_point(sweep, sweep.points()[0])
    return {
        "task_name": getattr(args.data, "task_name", sweep.task),
        "lora_init": args.training.lora_init,
        "learning_rate": args.training.learning_rate,
        "loraplus_lr_ratio": args.training.loraplus_lr_ratio or 1,
    }


def describe(sweep: Sweep) -> dict:
    """The sweep as written (secrets redacted), for the sweep's own record."""
    return redact_settings({k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(sweep).items()})
