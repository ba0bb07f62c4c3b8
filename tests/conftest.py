"""Shared fixtures: tiny random models saved as HF folders, and tiny GLUE-layout TSV folders written by the tests."""

import json
import os
import string
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders
from tokenizers.models import BPE
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizerFast,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if os.environ.get("PYTEST_XDIST_WORKER"):  # test processes share the cores: one thread each (and their subprocesses)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_GLUE = SHARED_DATA / "glue"
SHARED_LM = SHARED_DATA / "lm"
WORDS = "good bad great awful fine poor movie film plot actor story dull bright sad happy a the is was not".split()


def tiny_bert_config(vocab_size: int, **changes) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        **changes,
    )


def save_tiny_bert(folder: Path, **config_changes) -> Path:
    """A 2-layer, 32-wide BERT with a WordPiece tokenizer over WORDS, saved like a hub checkpoint (no task head)."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)}).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(tiny_bert_config(len(vocab), **config_changes)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def no_dropout_bert(tmp_path_factory) -> Path:
    """The tiny BERT without dropout: single and packed runs then do the same arithmetic (tests of packing)."""
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return save_tiny_bert(tmp_path_factory.mktemp("bert_no_dropout"), **no_dropout)


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


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character (a BPE with no merges), with <s>, </s>, <pad> and <unk>."""
    chars = ["<pad>", "<s>", "</s>", "<unk>", *string.ascii_letters, *string.digits, *string.punctuation, " ", "\n"]
    model = Tokenizer(BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[], unk_token="<unk>"))
    model.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=model, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_llama_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,  # frozen lm_head rows large enough that LoRA can move the logits far
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide Llama with a character tokenizer, saved like a hub checkpoint."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = char_tokenizer()
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(len(tokenizer))).save_pretrained(folder)
    return folder


def verse(i: int) -> str:
    return f"{sentence(i, 6)}, {sentence(i + 1, 4)}.\n"


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory) -> Path:
    """Ten .txt documents of 40 short lines each, for plain-text LM tasks."""
    folder = tmp_path_factory.mktemp("corpus")
    for doc in range(10):
        (folder / f"doc{doc}.txt").write_text("".join(verse(doc * 40 + i) for i in range(40)))
    return folder


def gsm8k_row(i: int) -> dict:
    a, b = i % 7 + 1, i % 5 + 2
    return {"question": f"Tom has {a} apples and buys {b} more. How many?", "answer": f"{a}+{b}={a + b}\n#### {a + b}"}


@pytest.fixture(scope="session")
def tiny_gsm8k_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gsm8k")
    for split, count in (("train", 24), ("test", 6)):
        rows = [gsm8k_row(i + (100 if split == "test" else 0)) for i in range(count)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder
