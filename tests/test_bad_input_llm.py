"""run_llm.py: every bad input gets one line on stderr naming the field, exit code 2, and no model is loaded."""

import importlib.util
import json

import pytest
import torch

import lorakit.models.arguments
import lorakit.models.loading
import run_llm
from tests.conftest import gsm8k_row


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(lorakit.models.loading.AutoModelForCausalLM, "from_pretrained", refuse)


def without_package(monkeypatch, package: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))


def error_line(capsys, tiny_llama_dir, *argv) -> str:
    assert run_llm.main(["--model_name_or_path", str(tiny_llama_dir), *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_llm.py: error: "), lines
    return lines[0]


def test_4bit_without_cuda(capsys, tiny_llama_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "load_in_4bit: requires a CUDA GPU" in error_line(capsys, tiny_llama_dir, "--load_in_4bit", "true")


@pytest.mark.parametrize("flag", ["load_in_4bit", "load_in_8bit"])
def test_quantized_without_bitsandbytes(flag, capsys, tiny_llama_dir, monkeypatch):
    monkeypatch.setattr(lorakit.models.arguments, "require_cuda", lambda flag: None)  # as if on a GPU machine
    without_package(monkeypatch, "bitsandbytes")
    line = error_line(capsys, tiny_llama_dir, f"--{flag}", "true")
    assert f"{flag}: needs the bitsandbytes package" in line


def test_gguf_without_the_gguf_package(capsys, tiny_llama_dir, monkeypatch):
    without_package(monkeypatch, "gguf")
    line = error_line(capsys, tiny_llama_dir, "--gguf_file", "model.Q4_0.gguf")
    assert "gguf_file: reading model.Q4_0.gguf needs the gguf package" in line


def test_block_size_above_the_context(capsys, tiny_llama_dir, tiny_corpus_dir):
    line = error_line(
        capsys, tiny_llama_dir, "--task_name", "text", "--data_dir", str(tiny_corpus_dir), "--block_size", "512"
    )
    assert "block_size: 512 tokens is above the model's context (max_position_embeddings = 256)" in line


def test_sft_length_above_the_context(capsys, tiny_llama_dir, tiny_gsm8k_dir):
    line = error_line(capsys, tiny_llama_dir, "--task_name", "gsm8k", "--data_dir", str(tiny_gsm8k_dir))
    assert "max_seq_length: 512 tokens is above the model's context" in line


def write_gsm8k(folder, test_rows) -> None:
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(gsm8k_row(i)) + "\n" for i in range(4)))
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test_rows))


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"question": "Q?"}], "test.jsonl line 1: GSM8K row lacks field answer (has: question)"),
        ([{"answer": "#### 3"}], "test.jsonl line 1: GSM8K row lacks field question"),
        ([{"question": "Q?", "answer": "3"}], "test.jsonl row 1: GSM8K answer has no '#### <number>' final line"),
    ],
)
def test_gsm8k_file_missing_fields(rows, message, capsys, tiny_llama_dir, tmp_path):
    write_gsm8k(tmp_path / "gsm8k", rows)
    line = error_line(capsys, tiny_llama_dir, "--task_name", "gsm8k", "--data_dir", str(tmp_path / "gsm8k"))
    assert message in line


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("mmlu.csv", "Q,a,b,c,A\n", "MMLU CSV rows have 6 fields"),
        ("mmlu.jsonl", '{"question": "Q", "choices": ["a", "b"], "answer": "A"}\n', "need question, 4 choices"),
    ],
)
def test_mmlu_file_missing_fields(name, text, message, capsys, tiny_llama_dir, tmp_path):
    (tmp_path / "flan.jsonl").write_text('{"prompt": "Q", "response": "A"}\n')
    (tmp_path / name).write_text(text)
    argv = [
        "--task_name",
        "instruct",
        "--train_file",
        str(tmp_path / "flan.jsonl"),
        "--mmlu_path",
        str(tmp_path / name),
    ]
    assert message in error_line(capsys, tiny_llama_dir, *argv)


CASES = {
    "unknown task": (["--task_name", "c4"], "task_name: unknown task 'c4'"),
    "text without a folder": (["--task_name", "text"], "data_dir: task text needs a folder"),
    "instruct without data": (["--task_name", "instruct"], "train_file: task instruct needs a JSONL file"),
    "missing folder": (["--task_name", "wikitext2", "--data_dir", "/no/such"], "data_dir: missing data file"),
    "unknown dtype": (["--torch_dtype", "fp8"], "torch_dtype: must be one of float32"),
    "instruct rows without a response": (["--task_name", "instruct", "--train_file", "{flan}"], "lacks field"),
    "unknown target module": (
        ["--task_name", "text", "--data_dir", "{corpus}", "--lora_target_modules", "query"],
        "lora_target_modules: no module named",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_flag(case, capsys, tiny_llama_dir, tiny_corpus_dir, tmp_path):
    (tmp_path / "flan.jsonl").write_text('{"prompt": "Q"}\n')
    argv, message = CASES[case]
    argv = [a.replace("{flan}", str(tmp_path / "flan.jsonl")).replace("{corpus}", str(tiny_corpus_dir)) for a in argv]
    assert message in error_line(capsys, tiny_llama_dir, *argv)


def test_wikitext_folder_without_the_test_split(capsys, tiny_llama_dir, tmp_path):
    (tmp_path / "train.txt").write_text("text\n")
    line = error_line(capsys, tiny_llama_dir, "--task_name", "wikitext2", "--data_dir", str(tmp_path))
    assert "data_dir: no WikiText test split" in line


def test_hub_unreachable_names_the_way_out(capsys, tiny_llama_dir, monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    line = error_line(capsys, tiny_llama_dir, "--task_name", "gsm8k")
    assert "could not load gsm8k from the hub (ConnectionError); pass --data_dir" in line
