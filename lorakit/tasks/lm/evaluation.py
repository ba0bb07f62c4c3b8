"""Evaluation for the lm task: held-out perplexity (token-weighted, exact), GSM8K exact match and MMLU accuracy, run
before and after training on the same examples so the two can be compared."""

import math

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from lorakit.tasks.lm.gsm8k import gsm8k_accuracy
from lorakit.tasks.lm.mmlu import mmlu_accuracy


@torch.no_grad()
def perplexity(model, dataset, collate, batch_size: int) -> dict:
    """exp(mean token loss) over every labelled token of `dataset` (blocks or SFT examples), summed per token, not
    averaged per batch."""
    total_loss, total_tokens = 0.0, 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate)
    for batch in tqdm(loader, desc="perplexity", leave=False):
        batch = {k: v.to(model.device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        labels = batch["labels"][:, 1:]
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), labels, ignore_index=-100, reduction="sum"
        )
        total_loss += losses.item()
        total_tokens += int((labels != -100).sum())
    loss = total_loss / max(total_tokens, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 700)), "tokens": total_tokens}


def evaluate_task(model, tokenizer, encoded, data, data_args, batch_size: int) -> dict:
    """Every metric the task has: perplexity on held-out text, GSM8K accuracy, MMLU accuracy."""
    was_training = model.training
    model.eval()
    results = {}
    if encoded.heldout is not None and len(encoded.heldout):
        results.update(perplexity(model, encoded.heldout, encoded.collate, batch_size))
    if data.gsm8k:
        results.update(gsm8k_accuracy(model, tokenizer, data.gsm8k, batch_size, data_args.max_new_tokens))
    if data.mmlu:
        args = (data.mmlu, data.mmlu_dev, data_args.mmlu_shots, batch_size, data_args.max_seq_length)
        results.update(mmlu_accuracy(model, tokenizer, *args))
    model.train(was_training)
    return results


class PerplexityCallback(TrainerCallback):
    """Adds ``eval_perplexity = exp(eval_loss)`` to the Trainer's evaluations (exact for equal-length blocks)."""

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics and "eval_loss" in metrics:
            metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 700))
        return control
