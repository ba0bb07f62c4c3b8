"""Data for the lm task: plain-text corpora, WikiText-2, GSM8K, instruction JSONL and MMLU, from files or the hub.

Everything is read and checked (files, fields) before any model is loaded, so bad data fails in seconds. Documents
and examples stay text here; `lorakit.tasks.lm.encoding` tokenizes them once the tokenizer is known.
"""

import random
from dataclasses import dataclass, field
from pathlib import Path

from lorakit.core.errors import ConfigError
from lorakit.core.fields import COUNT, FRACTION, POSITIVE_INT, SEED, Range, check_fields
from lorakit.core.userfiles import read_jsonl, read_text, text_field
from lorakit.models.embedded import shakespeare_dir
from lorakit.tasks.lm.encoding import evenly_spaced
from lorakit.tasks.lm.mmlu import McQuestion, mc_question, read_mmlu_file, subject_of

LM_TASKS = ("shakespeare", "text", "wikitext2", "gsm8k", "instruct")
HUB_SOURCES = {  # task → (dataset id, config) when no local files are given
    "wikitext2": ("Salesforce/wikitext", "wikitext-2-raw-v1"),
    "gsm8k": ("openai/gsm8k", "main"),
    "mmlu": ("cais/mmlu", "all"),
}
WIKITEXT_SPLITS = {"train": ("train", "wiki.train"), "test": ("test", "wiki.test")}


@dataclass
class LmDataArguments:
    task_name: str = field(
        default="shakespeare",
        metadata={"help": f"One of {', '.join(LM_TASKS)} (shakespeare: the embedded plays; text: a .txt folder)."},
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local data: a folder of .txt (text), wikitext-2 (train/test .txt or wiki.*.tokens), or gsm8k "
            "(train.jsonl, test.jsonl). Unset: the hub."
        },
    )
    train_file: str | None = field(
        default=None, metadata={"help": "instruct: JSONL of {prompt, response} (Flan's inputs/targets accepted)."}
    )
    mmlu_path: str | None = field(
        default=None,
        metadata={"help": "instruct: MMLU to evaluate on: hendrycks folder (test/*.csv, dev/*.csv), a CSV or JSONL."},
    )
    mmlu_shots: int = field(
        default=0, metadata={"help": "MMLU in-context examples per question (from dev/).", "rule": COUNT}
    )
    block_size: int = field(
        default=256, metadata={"help": "Tokens per training/evaluation block (LM tasks).", "rule": POSITIVE_INT}
    )
    max_seq_length: int = field(
        default=512, metadata={"help": "Longest prompt + response in tokens (SFT tasks).", "rule": POSITIVE_INT}
    )
    max_new_tokens: int = field(
        default=256, metadata={"help": "GSM8K: generation length for the worked answer.", "rule": POSITIVE_INT}
    )
    validation_fraction: float = field(
        default=0.1,
        metadata={"help": "text/shakespeare: fraction of documents held out for perplexity.", "rule": FRACTION},
    )
    data_split_seed: int = field(
        default=0, metadata={"help": "Seed of that split, fixed across run seeds.", "rule": SEED}
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Keep the first N documents/examples.", "rule": Range(low=1, integer=True, optional=True)},
    )
    max_eval_samples: int | None = field(
        default=32,
        metadata={
            "help": "Evaluate on N blocks / problems / questions, spread evenly over the set (0: all).",
            "rule": Range(low=0, integer=True, optional=True),
        },
    )

    def __post_init__(self) -> None:
        if self.task_name not in LM_TASKS:
            raise ConfigError(f"task_name: unknown task {self.task_name!r} (known: {', '.join(LM_TASKS)})")
        check_fields(self)
        for name in ("data_dir", "train_file", "mmlu_path"):
            path = getattr(self, name)
            hub = name == "train_file" and path is not None and path.startswith("hub:")
            if path is not None and not hub and not Path(path).exists():
                raise ConfigError(f"{name}: missing data file or folder: {path}")
        if self.task_name == "shakespeare" and self.data_dir is not None:
            raise ConfigError("data_dir: task shakespeare reads the embedded plays; use --task_name text for a folder")
        self.check_sources()
        if self.task_name == "text" and self.data_dir is None:
            raise ConfigError("data_dir: task text needs a folder of .txt files")
        if self.task_name == "instruct" and self.train_file is None:
            raise ConfigError("train_file: task instruct needs a JSONL file of prompt/response pairs")

    def check_sources(self) -> None:
        """Every data setting given must be one the task reads (a setting the task ignores is an error)."""
        reads = {"instruct": ("train_file", "mmlu_path", "mmlu_shots"), "shakespeare": ()}.get(
            self.task_name, ("data_dir",)
        )
        for name in ("data_dir", "train_file", "mmlu_path", "mmlu_shots"):
            if getattr(self, name) and name not in reads:
                raise ConfigError(
                    f"{name}: task {self.task_name} does not read it (it reads {', '.join(reads) or 'none'})"
                )

    @property
    def is_lm(self) -> bool:
        """Plain language modelling in fixed-length blocks (else supervised prompt → response)."""
        return self.task_name in ("shakespeare", "text", "wikitext2")


@dataclass
class SftExample:
    prompt: str
    response: str


@dataclass
class LmTaskData:
    """``train``: documents (LM tasks) or prompt/response examples. ``heldout``: the same kind, for perplexity.
    ``gsm8k``: problems scored by exact match; ``mmlu``: questions (and ``mmlu_dev`` for few-shot prompts)."""

    train: list
    heldout: list = field(default_factory=list)
    gsm8k: list[SftExample] = field(default_factory=list)
    mmlu: list[McQuestion] = field(default_factory=list)
    mmlu_dev: dict[str, list[McQuestion]] = field(default_factory=dict)
    source: str = ""


def read_text_folder(folder: Path) -> list[str]:
    files = sorted(p for p in folder.rglob("*.txt") if p.is_file())
    if not files:
        raise ConfigError(f"data_dir: no .txt files in {folder}")
    return [read_text(p) for p in files]


def split_documents(docs: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Whole documents held out (at least one), so held-out perplexity is on text never trained on."""
    if len(docs) < 2:
        raise ConfigError(f"data_dir: {len(docs)} document(s); a held-out split needs at least 2")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    cut = min(max(1, round(len(docs) * fraction)), len(docs) - 1)
    return [docs[i] for i in sorted(order[cut:])], [docs[i] for i in sorted(order[:cut])]


def gsm8k_examples(rows, where: str) -> list[SftExample]:
    examples = []
    for number, row in enumerate(rows, start=1):
        question, answer = (text_field(row, key, f"{where} row {number}") for key in ("question", "answer"))
        if "####" not in answer:
            raise ConfigError(f"{where} row {number}: GSM8K answer has no '#### <number>' final line")
        examples.append(SftExample(gsm8k_prompt(question), " " + answer.strip()))
    return examples


def gsm8k_prompt(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def read_gsm8k(args: LmDataArguments) -> LmTaskData:
    if args.data_dir is None:
        loaded = load_hub("gsm8k", HUB_SOURCES["gsm8k"])
        train, test = (gsm8k_examples(loaded[s], s) for s in ("train", "test"))
        return LmTaskData(train, gsm8k=test, source="hub:" + "/".join(HUB_SOURCES["gsm8k"]))
    folder, splits = Path(args.data_dir), {}
    for split in ("train", "test"):
        path = folder / f"{split}.jsonl"
        if not path.is_file():
            raise ConfigError(f"data_dir: missing GSM8K file {path}")
        splits[split] = gsm8k_examples(read_jsonl(path, (("question",), ("answer",)), "GSM8K"), str(path))
    return LmTaskData(splits["train"], gsm8k=splits["test"], source=str(folder))


def read_wikitext(args: LmDataArguments) -> LmTaskData:
    """WikiText-2 as one document per split; trained on train, perplexity on test."""
    if args.data_dir is None:
        loaded = load_hub("wikitext2", HUB_SOURCES["wikitext2"])
        train, test = ("".join(loaded[s]["text"]) for s in ("train", "test"))
        return LmTaskData([train], heldout=[test], source="hub:" + "/".join(HUB_SOURCES["wikitext2"]))
    folder, texts = Path(args.data_dir), {}
    for split, stems in WIKITEXT_SPLITS.items():
        found = [folder / f"{s}{x}" for s in stems for x in (".txt", ".tokens", ".raw")]
        path = next((p for p in found if p.is_file()), None)
        if path is None:
            raise ConfigError(
                f"data_dir: no WikiText {split} split in {folder} (looked for {split}.txt, {stems[1]}.*)"
            )
        texts[split] = read_text(path)
    return LmTaskData([texts["train"]], heldout=[texts["test"]], source=str(folder))


PROMPT_KEYS, RESPONSE_KEYS = ("prompt", "inputs", "instruction"), ("response", "targets", "output")


def instruct_examples(source: str) -> list[SftExample]:
    """Prompt/response pairs from a JSONL file or ``hub:<dataset>`` (its train split); Flan's ``inputs``/``targets``
    and Alpaca's ``instruction``/``output`` are accepted."""
    if source.startswith("hub:"):
        rows = load_hub("instruct", (source.removeprefix("hub:"), None))["train"]
        if not all(any(k in rows.column_names for k in keys) for keys in (PROMPT_KEYS, RESPONSE_KEYS)):
            raise ConfigError(
                f"train_file: {source} lacks prompt/response columns (has: {', '.join(rows.column_names)})"
            )
    else:
        rows = read_jsonl(Path(source), (PROMPT_KEYS, RESPONSE_KEYS), "instruction")
    examples = []
    for number, row in enumerate(rows, start=1):
        where = f"{source} row {number}"
        prompt, response = (
            text_field(row, next(k for k in keys if k in row), where) for keys in (PROMPT_KEYS, RESPONSE_KEYS)
        )
        examples.append(SftExample(prompt, " " + response))
    return examples


def read_mmlu(args: LmDataArguments) -> tuple[list[McQuestion], dict[str, list[McQuestion]]]:
    """Test questions and (for few-shot prompts) dev questions by subject."""
    if args.mmlu_path is None:
        loaded = load_hub("mmlu", HUB_SOURCES["mmlu"])
        test = [mc_question(dict(r), f"hub test row {n}") for n, r in enumerate(loaded["test"], start=1)]
        dev = [mc_question(dict(r), f"hub dev row {n}") for n, r in enumerate(loaded["dev"], start=1)]
    else:
        path = Path(args.mmlu_path)
        folder = path / "test" if (path / "test").is_dir() else path
        if not path.is_dir():
            test, dev = read_mmlu_file(path), []
        else:
            test = [q for f in sorted(folder.glob("*.csv")) for q in read_mmlu_file(f, subject_of(f))]
            dev = [q for f in sorted((path / "dev").glob("*.csv")) for q in read_mmlu_file(f, subject_of(f))]
            if not test:
                raise ConfigError(f"mmlu_path: no MMLU .csv files in {folder}")
    by_subject: dict[str, list[McQuestion]] = {}
    for q in dev:
        by_subject.setdefault(q.subject, []).append(q)
    if args.mmlu_shots and not dev:
        raise ConfigError("mmlu_shots: few-shot prompts need MMLU dev questions (a dev/ folder beside test/)")
    return test, by_subject


def load_hub(task: str, source: tuple[str, str]):
    try:
        import datasets

        return datasets.load_dataset(*source)
    except Exception as err:  # offline, missing package, or a hub error: one line, with the way out
        hint = {"mmlu": "--mmlu_path", "instruct": "--train_file"}.get(task, "--data_dir")
        raise ConfigError(
            f"task_name: could not load {task} from the hub ({type(err).__name__}); pass {hint} with local files"
        ) from None


def load_lm_data(args: LmDataArguments) -> LmTaskData:
    """Read the task's data: local files when given, the embedded plays, or the hub."""
    if args.task_name in ("shakespeare", "text"):
        folder = shakespeare_dir() if args.task_name == "shakespeare" else Path(args.data_dir)
        train, heldout = split_documents(read_text_folder(folder), args.validation_fraction, args.data_split_seed)
        source = f"embedded:{folder}" if args.task_name == "shakespeare" else str(folder)
        data = LmTaskData(train, heldout=heldout, source=source)
    elif args.task_name == "wikitext2":
        data = read_wikitext(args)
    elif args.task_name == "gsm8k":
        data = read_gsm8k(args)
        data.gsm8k = data.heldout = evenly_spaced(data.gsm8k, args.max_eval_samples)
    else:
        data = LmTaskData(instruct_examples(args.train_file), source=args.train_file)
        mmlu, data.mmlu_dev = read_mmlu(args)
        data.mmlu = evenly_spaced(mmlu, args.max_eval_samples)
    data.train = data.train[: args.max_train_samples]
    return data
