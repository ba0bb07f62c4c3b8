"""Tokenized datasets for the lm task: fixed-length blocks for language modelling, prompt → response examples for
supervised finetuning (loss on the response only), and left-padded batches for scoring and generation."""

from dataclasses import dataclass

import torch

from lorakit.core.errors import ConfigError

IGNORE = -100  # label of tokens the loss skips
LINES_PER_CHUNK = 64  # lines tokenized together; boundaries between chunks are where tokenization may differ


def tokenize_documents(docs: list[str], tokenizer) -> list[int]:
    """All documents as one token stream, each followed by EOS. Long documents are tokenized in chunks of lines."""
    stream: list[int] = []
    for doc in docs:
        lines = doc.splitlines(keepends=True)
        chunks = ["".join(lines[i : i + LINES_PER_CHUNK]) for i in range(0, len(lines), LINES_PER_CHUNK)]
        for ids in tokenizer(chunks, add_special_tokens=False)["input_ids"] if chunks else []:
            stream += ids
        stream.append(tokenizer.eos_token_id)
    return stream


def cut_into_blocks(docs: list[str], tokenizer, block_size: int) -> torch.Tensor:
    """A [blocks, block_size] tensor of the documents' token stream; the last partial block is dropped."""
    stream = torch.tensor(tokenize_documents(docs, tokenizer), dtype=torch.long)
    count = len(stream) // block_size
    return stream[: count * block_size].view(count, block_size)


class BlockDataset(torch.utils.data.Dataset):
    """Blocks of tokens; the model shifts labels = input_ids by one itself."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.blocks[i], "labels": self.blocks[i]}


class SftDataset(torch.utils.data.Dataset):
    """Prompt → response examples, each truncated to `max_length` tokens; only response tokens (and the closing EOS)
    carry labels. Prompt and response are tokenized as one text (as the model reads them at generation time), and
    the prompt's own token count marks where the labels begin."""

    def __init__(self, examples: list, tokenizer, max_length: int):
        prompts = tokenizer([e.prompt for e in examples], add_special_tokens=True)["input_ids"]
        full = tokenizer([e.prompt + e.response for e in examples], add_special_tokens=True)["input_ids"]
        self.items, self.dropped = [], 0
        for prompt, ids in zip(prompts, full, strict=True):
            start = shared_prefix_length(prompt, ids)  # where the response starts, even if a merge crosses it
            ids = (ids + [tokenizer.eos_token_id])[:max_length]
            if start >= len(ids):  # the prompt fills max_length: nothing left to learn from
                self.dropped += 1
                continue
            self.items.append((ids, [IGNORE] * start + ids[start:]))
        if not self.items:
            raise ConfigError(f"max_seq_length: every prompt is {max_length} tokens or longer, so no response is left")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        ids, labels = self.items[i]
        return {"input_ids": ids, "labels": labels}


def shared_prefix_length(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


class PadCollator:
    """Right-pads a batch to its longest example: pad id in inputs, IGNORE in labels, 0 in the attention mask (left
    out when no example is padded)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        ids = [torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features]
        longest = max(len(row) for row in ids)

        def padded(rows: list[torch.Tensor], value: int) -> torch.Tensor:
            out = torch.full((len(rows), longest), value, dtype=torch.long)
            for i, row in enumerate(rows):
                out[i, : len(row)] = row
            return out

        labels = [torch.as_tensor(f["labels"], dtype=torch.long) for f in features]
        batch = {"input_ids": padded(ids, self.pad_token_id), "labels": padded(labels, IGNORE)}
        if any(len(row) < longest for row in ids):  # full blocks need no mask (and no check of one)
            batch["attention_mask"] = padded([torch.ones(len(row), dtype=torch.long) for row in ids], 0)
        return batch


def left_padded_batches(encoded: list[list[int]], batch_size: int, pad_token_id: int, device):
    """Yield (indices, batch) over `encoded` in order of length (little padding), left-padded so every sequence ends
    at the last position; the batch holds input_ids, attention_mask and position_ids that skip the padding."""
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        longest = max(len(encoded[i]) for i in indices)
        ids = torch.full((len(indices), longest), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(indices), longest), dtype=torch.long)
        for row, i in enumerate(indices):
            ids[row, longest - len(encoded[i]) :] = torch.tensor(encoded[i])
            mask[row, longest - len(encoded[i]) :] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        batch = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
        yield indices, {k: v.to(device) for k, v in batch.items()}


def evenly_spaced(items, count: int | None):
    """`count` items spread over the whole sequence (all of them for None or 0), so a capped evaluation still covers
    every document and subject."""
    if not count or count >= len(items):
        return items
    return [items[i * len(items) // count] for i in range(count)]


@dataclass
class EncodedTask:
    train: torch.utils.data.Dataset
    heldout: torch.utils.data.Dataset | None
    collate: PadCollator


def encode_task(data, tokenizer, data_args) -> EncodedTask:
    """Tokenize a task's text: blocks for LM tasks (held-out blocks capped at ``max_eval_samples``, evenly spaced),
    prompt → response examples otherwise."""
    collate = PadCollator(tokenizer.pad_token_id)
    if not data_args.is_lm:
        heldout = SftDataset(data.heldout, tokenizer, data_args.max_seq_length) if data.heldout else None
        return EncodedTask(SftDataset(data.train, tokenizer, data_args.max_seq_length), heldout, collate)
    train = cut_into_blocks(data.train, tokenizer, data_args.block_size)
    heldout = cut_into_blocks(data.heldout, tokenizer, data_args.block_size)
    for name, blocks in (("training", train), ("held-out", heldout)):
        if len(blocks) == 0:
            raise ConfigError(
                f"block_size: the {name} text is shorter than one block of {data_args.block_size} tokens"
            )
    heldout = heldout[evenly_spaced(list(range(len(heldout))), data_args.max_eval_samples)]
    return EncodedTask(BlockDataset(train), BlockDataset(heldout), collate)
