"""Every bad input gets one line on stderr naming the field, exit code 2, and no model is loaded."""

import shutil

import pytest
import torch

import lorakit.models.loading
import run_glue
from tests.conftest import write_tsv


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(lorakit.models.loading.AutoModelForSequenceClassification, "from_pretrained", refuse)


@pytest.fixture
def sst2_dir(tmp_path, tiny_glue_dir):
    shutil.copytree(tiny_glue_dir / "SST-2", tmp_path / "SST-2")
    return tmp_path


def error_line(capsys, tiny_bert_dir, glue_dir, *argv) -> str:
    base = ["--model_name_or_path", str(tiny_bert_dir), "--glue_dir", str(glue_dir), "--task_name", "sst2"]
    assert run_glue.main([*base, *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_glue.py: error: "), lines
    return lines[0]


CASES = {
    "unknown task": (["--task_name", "sts"], "task_name: unknown task 'sts'"),
    "unknown init scheme": (["--lora_init", "C"], "lora_init: unknown init scheme 'C'"),
    "learning rate zero": (["--learning_rate", "0"], "learning_rate: must be > 0"),
    "learning rate negative": (["--learning_rate=-1e-4"], "learning_rate: must be > 0"),
    "rank zero": (["--lora_r", "0"], "lora_r: must be a positive integer"),
    "rank larger than the layer": (["--lora_r", "64"], "lora_r: 64 is larger than layer"),
    "missing data file": (["--train_file", "/no/such/train.tsv"], "train_file: missing data file"),
    "frozen A with Init[B]": (["--freeze_lora_A", "true", "--lora_init", "B"], "freeze_lora_A: cannot be combined"),
    "unknown target module": (["--lora_target_modules", "q_proj"], "lora_target_modules: no module named"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_flag(case, capsys, tiny_bert_dir, sst2_dir):
    argv, message = CASES[case]
    assert message in error_line(capsys, tiny_bert_dir, sst2_dir, *argv)


def test_unknown_config_key(capsys, tiny_bert_dir, sst2_dir, tmp_path):
    (tmp_path / "run.yaml").write_text("lora_r: 4\nlearning_rte: 1e-4\n")
    line = error_line(capsys, tiny_bert_dir, sst2_dir, "--config", str(tmp_path / "run.yaml"))
    assert "config: unknown key(s) learning_rte" in line


def test_glue_dir_without_the_task_files(capsys, tiny_bert_dir, sst2_dir):
    line = error_line(capsys, tiny_bert_dir, sst2_dir, "--task_name", "qnli")
    assert "glue_dir: missing data file" in line and "QNLI/train.tsv" in line


def test_tsv_missing_a_required_column(capsys, tiny_bert_dir, sst2_dir):
    write_tsv(sst2_dir / "SST-2" / "train.tsv", ["text", "label"], [["good movie", 1]])
    line = error_line(capsys, tiny_bert_dir, sst2_dir)
    assert "SST-2/train.tsv: missing column(s) 'sentence'" in line


def test_label_outside_the_label_set(capsys, tiny_bert_dir, sst2_dir):
    write_tsv(sst2_dir / "SST-2" / "dev.tsv", ["sentence", "label"], [["good movie", 1], ["bad film", 7]])
    line = error_line(capsys, tiny_bert_dir, sst2_dir)
    assert "dev.tsv line 3: label '7' is outside the label set of task sst2" in line


def test_csv_missing_a_column(capsys, tiny_bert_dir, sst2_dir, tmp_path):
    (tmp_path / "train.csv").write_text("text,label\ngood,1\n")
    line = error_line(capsys, tiny_bert_dir, sst2_dir, "--train_file", str(tmp_path / "train.csv"))
    assert "train.csv: missing column 'sentence'" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
@pytest.mark.parametrize("flag", ["fp16", "load_in_4bit", "load_in_8bit"])
def test_gpu_only_flags_without_cuda(flag, capsys, tiny_bert_dir, sst2_dir):
    line = error_line(capsys, tiny_bert_dir, sst2_dir, f"--{flag}", "true")
    assert f"{flag}: requires a CUDA GPU" in line
