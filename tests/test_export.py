"""`python -m lorakit.export <run> --merge`: the merged model, loaded as a plain HF model, gives the logits of the base
with the run's adapter (a classifier and a causal LM, Init[B] with LoRA+), and bad input is one line."""

import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import run_glue
import run_llm
from lorakit.export.__main__ import main

TRAIN = ["--max_steps", "4", "--per_device_train_batch_size", "8", "--learning_rate", "5e-2", "--lora_init", "B",
         "--loraplus_lr_ratio", "4", "--lora_dropout", "0", "--eval_strategy", "no"]  # fmt: skip


def logits_agree(auto_class, base_dir, run_dir, merged_dir, text: str, **base_kwargs) -> None:
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    inputs = tokenizer([text, text[: len(text) // 2]], return_tensors="pt", padding=True)
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(auto_class.from_pretrained(base_dir, **base_kwargs), run_dir).eval()
        merged = auto_class.from_pretrained(merged_dir).eval()
        expected, got = adapted(**inputs).logits, merged(**inputs).logits
    base = auto_class.from_pretrained(base_dir, **base_kwargs).eval()
    with torch.no_grad():
        assert not torch.allclose(base(**inputs).logits, expected, atol=1e-3)  # the adapter changed something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_a_merged_classifier_gives_the_adapters_logits(tmp_path, tiny_bert_dir, tiny_glue_dir):
    run_dir = tmp_path / "run"
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "mnli", "--glue_dir", str(tiny_glue_dir)]
    assert run_glue.main([*argv, "--output_dir", str(run_dir), *TRAIN]) == 0
    assert main([str(run_dir), "--merge", "true"]) == 0
    merged = tmp_path / "run-merged"
    assert json.loads((merged / "export.json").read_text())["init"]["scheme"] == "B"
    logits_agree(AutoModelForSequenceClassification, tiny_bert_dir, run_dir, merged, "a quiet delight", num_labels=3)


def test_a_merged_causal_lm_gives_the_adapters_logits(tmp_path, tiny_llama_dir, tiny_corpus_dir):
    run_dir, merged = tmp_path / "run", tmp_path / "elsewhere"
    argv = ["--model_name_or_path", str(tiny_llama_dir), "--task_name", "text", "--data_dir", str(tiny_corpus_dir)]
    assert run_llm.main([*argv, "--output_dir", str(run_dir), "--block_size", "32", *TRAIN]) == 0
    assert main([str(run_dir), "--merge", "true", "--output_dir", str(merged)]) == 0
    logits_agree(AutoModelForCausalLM, tiny_llama_dir, run_dir, merged, "the actors gave it all")


@pytest.mark.parametrize(
    "make, argv, message",
    [
        (lambda d: None, ["--merge", "true"], "no readable metrics.json"),
        (lambda d: (d / "metrics.json").write_text('{"status": "diverged"}'), ["--merge", "true"], "(diverged)"),
        (lambda d: (d / "metrics.json").write_text('{"status": "done"}'), ["--merge", "true"], "no adapter_config"),
        (lambda d: None, [], "say --merge"),
    ],
)
def test_bad_input_is_one_line(make, argv, message, tmp_path, capsys):
    make(tmp_path)
    assert main([str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err
