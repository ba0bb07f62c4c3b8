"""Shared fixtures: tiny random models saved as HF folders, and tiny GLUE-layout TSV folders written by the tests."""

import os
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
WORDS = "good bad great awful fine poor movie film plot actor story dull bright sad happy a the is was not".split()


def tiny_bert_config(vocab_size: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece tokenizer over WORDS, saved like a hub checkpoint (no task head)."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(tiny_bert_config(len(vocab))).save_pretrained(folder)
    return folder


def sentence(i: int, n: int = 5) -> str:
    return " ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(n))


# GLUE's own TSV layouts (header row, or None for CoLA) and a row maker for each task folder.
GLUE_LAYOUTS = {
    "CoLA": (None, lambda i, y: ["src", y, "", sentence(i)]),
    "SST-2": (["sentence", "label"], lambda i, y: [sentence(i), y]),
    "MRPC": (
        ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        lambda i, y: [y, "1", "2", sentence(i), sentence(i + 1)],
    ),
    "STS-B": (
        ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"],
        lambda i, y: [
            i,
            "g",
            "f",
            "y",
            i,
            "s",
            "s",
            sentence(i),
            sentence(i + 2),
            f"{float(y) * 2.5 + i % 3 * 0.5:.2f}",
        ],
    ),
    "QQP": (
        ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
        lambda i, y: [i, 1, 2, sentence(i), sentence(i + 1), y],
    ),
    "MNLI": (
        ["index", "promptID", "pairID", "genre", "sentence1", "sentence2", "label1", "gold_label"],
        lambda i, y: [
            i,
            1,
            2,
            "g",
            sentence(i),
            sentence(i + 3),
            "x",
            ["entailment", "neutral", "contradiction"][i % 3],
        ],
    ),
    "QNLI": (
        ["index", "question", "sentence", "label"],
        lambda i, y: [i, sentence(i), sentence(i + 1), ["entailment", "not_entailment"][int(y)]],
    ),
    "RTE": (
        ["index", "sentence1", "sentence2", "label"],
        lambda i, y: [i, sentence(i), sentence(i + 1), ["entailment", "not_entailment"][int(y)]],
    ),
    "WNLI": (["index", "sentence1", "sentence2", "label"], lambda i, y: [i, sentence(i), sentence(i + 1), y]),
}
SPLITS = {"MNLI": ("train", "dev_matched", "dev_mismatched")}


def write_tsv(path: Path, header: list | None, rows: list[list]) -> None:
    lines = ([header] if header else []) + rows
    path.write_text("\n".join("\t".join(map(str, r)) for r in lines) + "\n")


@pytest.fixture(scope="session")
def tiny_glue_dir(tmp_path_factory) -> Path:
    """Every GLUE task folder with 24 train and 12 dev rows in GLUE's own layout."""
    root = tmp_path_factory.mktemp("glue")
    for folder, (header, make_row) in GLUE_LAYOUTS.items():
        (root / folder).mkdir()
        for split in SPLITS.get(folder, ("train", "dev")):
            count = 24 if split == "train" else 12
            write_tsv(root / folder / f"{split}.tsv", header, [make_row(i, str(i % 2)) for i in range(count)])
    return root
