"""run_llm.py end to end on a tiny random Llama: block LM training, GSM8K and instruct → MMLU wiring, saved adapters,
and the init contracts on a causal LM."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

import run_llm
from init_schemes import InitSpec
from init_schemes.schemes import lora_factors
from lorakit.core.errors import ConfigError
from lorakit.models.arguments import LoraArguments
from lorakit.models.lora import add_lora
from lorakit.tasks.lm.data import SftExample
from lorakit.tasks.lm.encoding import BlockDataset, PadCollator, SftDataset, cut_into_blocks
from lorakit.tasks.lm.evaluation import perplexity
from loraplus.groups import assert_partition, loraplus_param_groups
from tests.conftest import verse

FAST = ["--per_device_train_batch_size", "8", "--logging_steps", "5", "--lora_dropout", "0"]


def run(tmp_path, tiny_llama_dir, *argv) -> dict:
    out = tmp_path / "run"
    assert run_llm.main(["--model_name_or_path", str(tiny_llama_dir), "--output_dir", str(out), *FAST, *argv]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture
def wikitext_dir(tmp_path):
    """WikiText-2's file layout (train/valid/test .txt), with tiny contents."""
    folder = tmp_path / "wikitext-2"
    folder.mkdir()
    for split, start in (("train", 0), ("valid", 500), ("test", 900)):
        (folder / f"{split}.txt").write_text("".join(verse(start + i) for i in range(120 if split == "train" else 40)))
    return folder


@pytest.mark.parametrize("task", ["text", "wikitext2"])
def test_block_lm_training_lowers_held_out_perplexity(task, tmp_path, tiny_llama_dir, tiny_corpus_dir, wikitext_dir):
    data_dir = tiny_corpus_dir if task == "text" else wikitext_dir
    metrics = run(
        tmp_path, tiny_llama_dir, "--task_name", task, "--data_dir", str(data_dir), "--block_size", "64",
        "--max_steps", "60", "--learning_rate", "5e-2", "--max_eval_samples", "0",
    )  # fmt: skip
    before, after = metrics["before"], metrics["final"]
    assert metrics["status"] == "done" and before["tokens"] == after["tokens"] > 0
    assert after["perplexity"] < 0.8 * before["perplexity"], (before, after)


def test_saved_adapter_reproduces_the_final_perplexity(tmp_path, tiny_llama_dir, tiny_corpus_dir):
    argv = ["--task_name", "text", "--data_dir", str(tiny_corpus_dir), "--block_size", "64", "--max_eval_samples", "4"]
    metrics = run(tmp_path, tiny_llama_dir, *argv, "--max_steps", "10", "--lora_init", "B")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), tmp_path / "run")
    prepared = run_llm.TASK.prepare(["--model_name_or_path", str(tiny_llama_dir), *argv])
    encoded = prepared.extra["encoded"]
    again = perplexity(model.eval(), encoded.heldout, PadCollator(tokenizer.pad_token_id), 8)
    assert again["perplexity"] == pytest.approx(metrics["final"]["perplexity"], rel=1e-4)


def test_gsm8k_run_scores_before_and_after(tmp_path, tiny_llama_dir, tiny_gsm8k_dir):
    metrics = run(
        tmp_path, tiny_llama_dir, "--task_name", "gsm8k", "--data_dir", str(tiny_gsm8k_dir), "--max_steps", "3",
        "--max_new_tokens", "12", "--max_seq_length", "128",
    )  # fmt: skip
    for result in (metrics["before"], metrics["final"]):
        assert result["gsm8k_problems"] == 6 and 0 <= result["gsm8k_accuracy"] <= 1 and result["tokens"] > 0


def test_instruct_run_scores_mmlu(tmp_path, tiny_llama_dir):
    (tmp_path / "flan.jsonl").write_text(
        "".join(json.dumps({"inputs": f"Q{i}?", "targets": "A"}) + "\n" for i in range(8))
    )
    (tmp_path / "mmlu").mkdir()
    (tmp_path / "mmlu" / "math_test.csv").write_text("1+1?,2,3,4,5,A\n2+2?,1,4,6,8,B\n3+3?,1,2,6,9,C\n")
    metrics = run(
        tmp_path, tiny_llama_dir, "--task_name", "instruct", "--train_file", str(tmp_path / "flan.jsonl"),
        "--mmlu_path", str(tmp_path / "mmlu"), "--max_steps", "3", "--max_seq_length", "128",
    )  # fmt: skip
    assert metrics["before"]["mmlu_questions"] == metrics["final"]["mmlu_questions"] == 3
    assert metrics["status"] == "done"


def test_blocks_cover_the_token_stream_with_eos_between_documents(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    blocks = cut_into_blocks(["ab\ncd", "ef"], tokenizer, block_size=4)
    assert blocks.shape == (2, 4)  # a b \n c | d </s> e f  (the final </s> is dropped with the partial block)
    assert tokenizer.decode(blocks.flatten()) == "ab\ncd</s>ef"
    assert blocks[1, 1] == tokenizer.eos_token_id
    assert torch.equal(BlockDataset(blocks)[1]["labels"], blocks[1])


def test_sft_labels_cover_the_response_and_eos_only(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    examples = [SftExample("Question: 2+3?\nAnswer:", " 2+3=5\n#### 5"), SftExample("Hi", " there")]
    dataset = SftDataset(examples, tokenizer, max_length=64)
    for item, example in zip(dataset, examples, strict=True):
        labelled = [t for t in item["labels"] if t != -100]
        assert tokenizer.decode(labelled) == example.response + "</s>"
        assert tokenizer.decode(item["input_ids"]) == example.prompt + example.response + "</s>"
    assert len(SftDataset(examples[:1], tokenizer, max_length=24)[0]["input_ids"]) == 24
    short = SftDataset(examples, tokenizer, max_length=10)  # the first prompt alone is 21 tokens: dropped
    assert (len(short), short.dropped) == (1, 1)
    with pytest.raises(ConfigError, match="max_seq_length: every prompt is 2 tokens or longer"):
        SftDataset(examples, tokenizer, max_length=2)


@pytest.mark.parametrize("scheme, random_name, zero_name", [("A", "lora_A", "lora_B"), ("B", "lora_B", "lora_A")])
def test_init_contract_holds_on_the_causal_lm(scheme, random_name, zero_name, tiny_llama_dir):
    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    ids = torch.randint(4, 90, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = base(input_ids=ids).logits
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    lora_args = LoraArguments(lora_r=4, lora_dropout=0.0, lora_target_modules=targets, modules_to_save=[])
    model, record = add_lora(base, lora_args, InitSpec(scheme, seed=1), "CAUSAL_LM")
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, expected)  # BA = 0 exactly, so outputs are unchanged
    factors = list(lora_factors(model))
    assert len(factors) == 2 * len(targets) and record["random_factor"] == scheme
    for factor in factors:
        weights = {"lora_A": factor.a, "lora_B": factor.b}
        assert torch.count_nonzero(weights[zero_name]) == 0 and torch.count_nonzero(weights[random_name]) > 0
    assert_partition(model, loraplus_param_groups(model, lr=1e-3, loraplus_lr_ratio=16))
