"""GSM8K: the final number of a worked answer, exact-match scoring, and batched greedy generation.

A reference answer ends with ``#### <number>``. A generated answer is read the same way when it has that line, else
its last number counts (what the model says before starting a new ``Question:``). Numbers compare by value after
dropping thousands separators, currency signs and a trailing period: ``1,000`` = ``1000`` = ``$1000.00``.
"""

import re
from decimal import Decimal, InvalidOperation

import torch
from tqdm.auto import tqdm

from lorakit.tasks.lm.encoding import left_padded_batches

NUMBER = re.compile(r"-?[$€£]?\s?\d[\d,]*(?:\.\d+)?")
STOP = "\nQuestion:"  # the model has moved on to a next problem of its own


def final_number(text: str) -> str | None:
    """The answer's final number as written (normalised: no commas or currency), or None when it has none."""
    text = text.split(STOP)[0]
    tail = text.rsplit("####", 1)[1] if "####" in text else text
    found = NUMBER.findall(tail)
    if not found:
        return None
    raw = found[0] if "####" in text else found[-1]
    return re.sub(r"[,$€£\s]", "", raw).rstrip(".")


def same_number(predicted: str | None, reference: str | None) -> bool:
    if predicted is None or reference is None:
        return False
    try:
        return Decimal(predicted) == Decimal(reference)
    except InvalidOperation:
        return predicted == reference


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int) -> list[str]:
    """Greedy continuations of `prompts`, batched and left-padded, each cut at EOS."""
    encoded = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    outputs = [""] * len(prompts)
    batches = left_padded_batches(encoded, batch_size, tokenizer.pad_token_id, model.device)
    for indices, batch in tqdm(batches, desc="gsm8k generation", total=-(-len(encoded) // batch_size), leave=False):
        batch.pop("position_ids")  # generate derives them from the attention mask
        tokens = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            stop_strings=[STOP],
            tokenizer=tokenizer,
        )
        texts = tokenizer.batch_decode(tokens[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        for i, text in zip(indices, texts, strict=True):
            outputs[i] = text
    return outputs


def gsm8k_accuracy(model, tokenizer, examples: list, batch_size: int, max_new_tokens: int) -> dict:
    """Exact match of the final number under greedy generation; `examples` hold prompt and reference response."""
    answers = generate(model, tokenizer, [e.prompt for e in examples], batch_size, max_new_tokens)
    correct = [same_number(final_number(a), final_number(e.response)) for a, e in zip(answers, examples, strict=True)]
    return {"gsm8k_accuracy": sum(correct) / len(correct), "gsm8k_problems": len(correct)}
