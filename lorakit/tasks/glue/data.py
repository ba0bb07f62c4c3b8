"""Data for the glue task: GLUE TSV folders, user CSV/JSON(L) files, the hub, or the embedded movie-review corpus.

Everything is read and checked (columns, labels) before any model is loaded, so bad data fails in seconds.
"""

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from lorakit.core.errors import ConfigError
from lorakit.core.fields import FRACTION, POSITIVE_INT, SEED, Range, check_fields
from lorakit.core.userfiles import nonempty_lines, read_csv_rows, read_json_records, read_jsonl, text_field
from lorakit.models.embedded import movie_reviews_file
from lorakit.tasks.classification import Example, TaskData
from lorakit.tasks.glue.catalog import GLUE_TASKS, HUB_EVAL_SPLITS, HUB_GLUE_DATASET, GlueTask

SAMPLE_CAP = Range(low=1, integer=True, optional=True)


@dataclass
class GlueDataArguments:
    task_name: str = field(
        default="movie_reviews", metadata={"help": f"One of {', '.join(GLUE_TASKS)} (movie_reviews: embedded)."}
    )
    glue_dir: str | None = field(
        default=None, metadata={"help": "Folder in GLUE's TSV layout (<dir>/SST-2/train.tsv, MNLI/dev_matched.tsv…)."}
    )
    train_file: str | None = field(
        default=None, metadata={"help": "Training file: .tsv (GLUE layout), .csv, .json(l)."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Validation file, same formats (replaces the source's validation split)."}
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Tokens per example after truncation.", "rule": POSITIVE_INT}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N training examples.", "rule": SAMPLE_CAP}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N examples per eval set.", "rule": SAMPLE_CAP}
    )
    validation_fraction: float = field(
        default=0.1,
        metadata={"help": "Held-out fraction when the data has no validation split (movie_reviews)", "rule": FRACTION},
    )
    data_split_seed: int = field(
        default=0, metadata={"help": "Seed of that split, fixed across run seeds.", "rule": SEED}
    )

    def __post_init__(self) -> None:
        if self.task_name not in GLUE_TASKS:
            raise ConfigError(f"task_name: unknown task {self.task_name!r} (known: {', '.join(GLUE_TASKS)})")
        check_fields(self)
        for name in ("glue_dir", "train_file", "validation_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).exists():
                raise ConfigError(f"{name}: missing data file or folder: {path}")

    @property
    def task(self) -> GlueTask:
        return GLUE_TASKS[self.task_name]


def label_id(task: GlueTask, raw, where: str) -> int | float:
    """The label id of a raw label value (a TSV string, a hub int, or a label name); error if outside the label set."""
    text = str(raw).strip()
    if task.is_regression:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"{where}: label {text!r} is not a number (task {task.name} is a regression)") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: label {text!r} is not a finite number")
        return value
    for index, values in enumerate(task.label_values):
        if text in values:
            return index
    allowed = sorted({v for values in task.label_values for v in values})
    raise ConfigError(f"{where}: label {text!r} is outside the label set of task {task.name} {allowed}")


def examples_from_records(task: GlueTask, rows, where: str) -> list[Example]:
    """Examples from dict rows keyed by the hub's column names (CSV, JSON, JSONL and hub data)."""
    examples = []
    for number, row in enumerate(rows, start=1):
        for column in (*task.text_fields, "label"):
            if column not in row:
                raise ConfigError(f"{where}: missing column {column!r} (has: {', '.join(map(str, row))})")
        texts = tuple(text_field(row, f, f"{where} row {number}") for f in task.text_fields)
        label = text_field(row, "label", f"{where} row {number}")
        examples.append(Example(texts, label_id(task, label, f"{where} row {number}")))
    return examples


def read_glue_tsv(task: GlueTask, path: Path) -> list[Example]:
    """Examples from one of GLUE's own TSV files (quotes are literal text in GLUE, so no CSV quoting)."""
    lines = nonempty_lines(path)
    columns = task.tsv_columns
    if all(isinstance(c, int) for c in columns.values()):
        header, body = None, lines
    else:
        if not lines:
            raise ConfigError(f"{path}: empty file (expected a header row and examples)")
        header, body = lines[0][1].split("\t"), lines[1:]
        missing = [c for c in columns.values() if c not in header]
        if missing:
            raise ConfigError(f"{path}: missing column(s) {', '.join(map(repr, missing))} (has: {', '.join(header)})")
    if not body:
        raise ConfigError(f"{path}: no examples" + (" below its header" if header else ""))
    index = {name: (c if header is None else header.index(c)) for name, c in columns.items()}
    examples = []
    for number, line in body:
        cells = line.split("\t")
        if len(cells) <= max(index.values()):
            raise ConfigError(
                f"{path} line {number}: {len(cells)} columns, expected at least {max(index.values()) + 1}"
            )
        texts = tuple(cells[index[f]] for f in task.text_fields)
        examples.append(Example(texts, label_id(task, cells[index["label"]], f"{path} line {number}")))
    return examples


def read_data_file(task: GlueTask, path: Path) -> list[Example]:
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a data file (a GLUE-layout folder is --glue_dir)")
    if path.suffix == ".tsv":
        return read_glue_tsv(task, path)
    if path.suffix == ".csv":
        return examples_from_records(task, read_csv_rows(path, header=True), str(path))
    if path.suffix in (".json", ".jsonl"):
        rows = read_json_records(path) if path.suffix == ".json" else read_jsonl(path)
        return examples_from_records(task, rows, str(path))
    raise ConfigError(f"{path}: unsupported data file type {path.suffix!r} (use .tsv, .csv, .json or .jsonl)")


def split_file(folder: Path, stem: str, required: bool) -> Path | None:
    for suffix in (".tsv", ".jsonl", ".json", ".csv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    if required:
        raise ConfigError(f"glue_dir: missing data file {folder / stem}.tsv")
    return None


def read_glue_dir(task: GlueTask, glue_dir: Path) -> TaskData:
    folder = glue_dir / task.glue_dir
    train_path = split_file(folder, "train", required=True)
    evals = {}
    for split, stem in task.eval_files.items():
        path = split_file(folder, stem, required=split not in task.optional_eval)
        if path is not None:
            evals[split] = read_data_file(task, path)
    return TaskData(read_data_file(task, train_path), evals, str(folder))


def read_movie_reviews(path: Path) -> list[Example]:
    """Binary polarity by the sign of the mean human rating; the 37 sentences rated exactly 0 are left out."""
    examples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            _, rating, sentence = line.split("\t", 2)
            if float(rating) != 0:
                examples.append(Example((sentence,), int(float(rating) > 0)))
    return examples


def split_off_validation(examples: list[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    cut = round(len(examples) * fraction)
    return [examples[i] for i in order[cut:]], [examples[i] for i in order[:cut]]


def read_hub_task(task: GlueTask) -> TaskData:
    try:
        import datasets

        loaded = datasets.load_dataset(HUB_GLUE_DATASET, task.name)
    except Exception as err:  # offline, missing package, or a hub error: one line, with the way out
        raise ConfigError(
            f"task_name: could not load {task.name} from the hub ({type(err).__name__}); "
            "pass --glue_dir or --train_file/--validation_file"
        ) from None
    evals = {s: examples_from_records(task, loaded[HUB_EVAL_SPLITS[s]], s) for s in task.eval_files}
    return TaskData(
        examples_from_records(task, loaded["train"], "train"), evals, f"hub:{HUB_GLUE_DATASET}/{task.name}"
    )


def load_task_data(args: GlueDataArguments) -> TaskData:
    """Read the task's data: a GLUE folder, else `train_file` (validation split off it when no validation file is
    given), else the embedded corpus or the hub. A `train_file` or `validation_file` given beside a source replaces
    that source's split."""
    task = args.task
    if args.glue_dir:
        data = read_glue_dir(task, Path(args.glue_dir))
    elif args.train_file:
        train = read_data_file(task, Path(args.train_file))
        validation = [] if args.validation_file else None
        if validation is None:
            train, validation = split_off_validation(train, args.validation_fraction, args.data_split_seed)
        data = TaskData(train, {"validation": validation}, args.train_file)
    elif task.name == "movie_reviews":
        path = movie_reviews_file()
        train, validation = split_off_validation(
            read_movie_reviews(path), args.validation_fraction, args.data_split_seed
        )
        data = TaskData(train, {"validation": validation}, f"embedded:{path.name}")
    else:
        data = read_hub_task(task)
    if args.train_file and args.glue_dir:
        data.train, data.source = read_data_file(task, Path(args.train_file)), f"{args.train_file} + {data.source}"
    if args.validation_file:
        data.evals = {"validation": read_data_file(task, Path(args.validation_file))}
        data.source += f" (validation: {args.validation_file})"
    data.train = data.train[: args.max_train_samples]
    data.evals = {name: examples[: args.max_eval_samples] for name, examples in data.evals.items()}
    check_sizes(data, args)
    return data


def check_sizes(data: TaskData, args: GlueDataArguments) -> None:
    """Training needs examples, and so does every evaluation set (a split off a small file can leave none)."""
    split = "" if args.glue_dir or args.validation_file else f" (validation_fraction {args.validation_fraction})"
    if not data.train:
        raise ConfigError(f"{args.train_file or data.source}: no training examples left{split}")
    for name, examples in data.evals.items():
        if not examples:
            raise ConfigError(f"{data.source}: no {name} examples left{split}")
