"""MMLU: reading questions (hendrycks CSV, JSONL, hub rows), building prompts, and scoring by the answer letters.

A question is answered by the letter among A–D whose token gets the highest log-likelihood right after the prompt's
final ``Answer:`` (one forward pass per question, no generation), the scoring of the MMLU reference code.
"""

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from lorakit.core.errors import ConfigError
from lorakit.core.userfiles import read_csv_rows, read_json_records
from lorakit.tasks.lm.encoding import left_padded_batches

LETTERS = "ABCD"


@dataclass
class McQuestion:
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str = ""


def mc_question(row, where: str) -> McQuestion:
    """One question from a hendrycks CSV row (question, A, B, C, D, answer) or a dict row (question, choices or
    A-D, answer as a letter or an index)."""
    if isinstance(row, list):
        if len(row) != 6:
            raise ConfigError(f"{where}: MMLU CSV rows have 6 fields (question,A,B,C,D,answer), got {len(row)}")
        question, choices, answer = row[0], tuple(row[1:5]), row[5]
    else:
        choices = row.get("choices") or [row[k] for k in LETTERS if k in row]
        if "question" not in row or "answer" not in row or len(choices) != 4:
            raise ConfigError(f"{where}: MMLU rows need question, 4 choices (choices or A-D) and answer")
        question, answer = row["question"], row["answer"]
    text = str(answer).strip()
    index = LETTERS.index(text) if text in tuple(LETTERS) else int(text) if text in ("0", "1", "2", "3") else None
    if index is None:
        raise ConfigError(f"{where}: MMLU answer {text!r} is not one of A-D or 0-3")
    subject = str(row.get("subject", "")) if isinstance(row, dict) else ""
    return McQuestion(str(question), tuple(map(str, choices)), index, subject)


def subject_of(path: Path) -> str:
    return re.sub(r"_(test|dev|val)$", "", path.stem)


def read_mmlu_file(path: Path, subject: str = "") -> list[McQuestion]:
    if path.suffix == ".csv":
        rows = read_csv_rows(path, header=False)
    elif path.suffix in (".jsonl", ".json"):
        rows = read_json_records(path)  # fields are checked per row by mc_question
    else:
        raise ConfigError(f"mmlu_path: unsupported file type {path.suffix!r} (use .csv or .jsonl)")
    questions = [mc_question(row, f"{path} row {n}") for n, row in enumerate(rows, start=1)]
    for q in questions:
        q.subject = q.subject or subject
    return questions


def format_question(q: McQuestion, with_answer: bool) -> str:
    lines = [q.question.strip(), *(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices, strict=True))]
    return "\n".join(lines) + "\nAnswer:" + (f" {LETTERS[q.answer]}" if with_answer else "")


def mmlu_prompt(q: McQuestion, shots: list[McQuestion]) -> str:
    subject = q.subject.replace("_", " ") or "general knowledge"
    header = f"The following are multiple choice questions (with answers) about {subject}.\n\n"
    return header + "".join(format_question(s, True) + "\n\n" for s in shots) + format_question(q, False)


def letter_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """How the letters are tokenized right after ``Answer:``: the tokens all four share (a lone space for a
    character-level tokenizer, nothing for BPE's `` A`` or SentencePiece's ``▁A``), then each letter's own token."""
    stem = tokenizer.encode("Answer:", add_special_tokens=False)
    tails = []
    for letter in LETTERS:
        full = tokenizer.encode(f"Answer: {letter}", add_special_tokens=False)
        if full[: len(stem)] != stem or len(full) == len(stem):
            raise ValueError(f"the tokenizer does not split 'Answer: {letter}' after 'Answer:'")
        tails.append(full[len(stem) :])
    shared = tails[0][:-1]
    if any(tail[:-1] != shared for tail in tails) or len({tail[-1] for tail in tails}) != len(LETTERS):
        raise ValueError(f"the answer letters do not each end in one distinct token: {tails}")
    return shared, [tail[-1] for tail in tails]


@torch.no_grad()
def predict_letters(model, tokenizer, prompts: list[str], batch_size: int, max_length: int) -> list[int]:
    """For each prompt, the index of the letter with the highest next-token logit. A prompt longer than
    `max_length` tokens is cut from the left, so its end (``Answer:``) is kept; the cut drops BOS and, in few-shot
    prompts, the earliest examples first."""
    shared, letter_ids = letter_token_ids(tokenizer)
    letters = torch.tensor(letter_ids)
    encoded = [(ids + shared)[-max_length:] for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
    predictions = [0] * len(prompts)
    batches = left_padded_batches(encoded, batch_size, tokenizer.pad_token_id, model.device)
    for indices, batch in tqdm(batches, desc="mmlu", total=-(-len(encoded) // batch_size), leave=False):
        logits = model(**batch).logits[:, -1, :].float().cpu()
        for i, row in zip(indices, logits[:, letters].argmax(dim=-1).tolist(), strict=True):
            predictions[i] = row
    return predictions


def mmlu_accuracy(model, tokenizer, questions, dev, shots: int, batch_size: int, max_length: int) -> dict:
    prompts = [mmlu_prompt(q, dev.get(q.subject, [])[:shots]) for q in questions]
    predicted = predict_letters(model, tokenizer, prompts, batch_size, max_length)
    correct = [p == q.answer for p, q in zip(predicted, questions, strict=True)]
    return {"mmlu_accuracy": sum(correct) / len(correct), "mmlu_questions": len(correct)}
