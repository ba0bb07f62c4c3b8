"""Bad input of every class for the runners (run_glue.py, run_llm.py; run_toy.py and sweeps in test_bad_input_tools):
one line on stderr naming the field or file, exit code 2, and no model loaded and nothing written before it. The
classes: numbers out of range or not finite, values of the wrong type, malformed user files (TSV, CSV, JSON, JSONL,
YAML, text), model and output paths that cannot work, and settings a task or the Trainer would ignore or reject only
after loading."""

import shutil

import pytest
import torch

import lorakit.models.loading
import run_glue
import run_llm
from tests.conftest import write_tsv


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was reported")

    for auto in (
        lorakit.models.loading.AutoModelForSequenceClassification,
        lorakit.models.loading.AutoModelForCausalLM,
    ):
        monkeypatch.setattr(auto, "from_pretrained", refuse)


def one_error_line(capsys, name: str, code: int) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"{name}: error: "), (code, lines)
    return lines[0]


@pytest.fixture
def glue(tmp_path, tiny_glue_dir):
    shutil.copytree(tiny_glue_dir / "SST-2", tmp_path / "glue" / "SST-2")
    return tmp_path / "glue"


def glue_error(capsys, tiny_bert_dir, glue_dir, tmp_path, *argv) -> str:
    base = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--glue_dir", str(glue_dir)]
    code = run_glue.main([*base, "--output_dir", str(tmp_path / "out"), *argv])
    line = one_error_line(capsys, "run_glue.py", code)
    assert not (tmp_path / "out" / "metrics.json").exists()
    return line


GLUE_FLAGS = {
    "batch size 0": (
        ["--per_device_train_batch_size", "0"],
        "per_device_train_batch_size: must be a positive integer",
    ),
    "batch size negative": (["--per_device_train_batch_size=-4"], "per_device_train_batch_size: must be a positive"),
    "eval batch size 0": (["--per_device_eval_batch_size", "0"], "per_device_eval_batch_size: must be a positive"),
    "accumulation 0": (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps: must be a positive"),
    "epochs NaN": (["--num_train_epochs", "nan"], "num_train_epochs: must be > 0, got nan"),
    "epochs 0": (["--num_train_epochs", "0"], "num_train_epochs: must be > 0, got 0"),
    "epochs negative": (["--num_train_epochs=-1"], "num_train_epochs: must be > 0"),
    "max steps 0": (["--max_steps", "0"], "max_steps: must be a positive integer (or -1)"),
    "learning rate inf": (["--learning_rate", "inf"], "learning_rate: must be > 0, got inf"),
    "learning rate NaN": (["--learning_rate", "nan"], "learning_rate: must be > 0, got nan"),
    "alpha 0": (["--lora_alpha", "0"], "lora_alpha: must be > 0"),
    "alpha inf": (["--lora_alpha", "inf"], "lora_alpha: must be > 0, got inf"),
    "negative weight decay": (["--weight_decay=-0.1"], "weight_decay: must be ≥ 0"),
    "train cap 0": (["--max_train_samples", "0"], "max_train_samples: must be a positive integer (or unset)"),
    "train cap negative": (["--max_train_samples=-5"], "max_train_samples: must be a positive integer"),
    "eval cap negative": (["--max_eval_samples=-1"], "max_eval_samples: must be a positive integer"),
    "seed negative": (["--seed=-1"], "seed: must be an integer in [0, 4294967295], got -1"),
    "dropout 1": (["--lora_dropout", "1"], "lora_dropout: must be in [0, 1)"),
    "init scale 0": (["--lora_init_scale", "0"], "lora_init_scale: must be > 0"),
    "warmup negative": (["--warmup_steps=-1"], "warmup_steps: must be ≥ 0"),
    "beta2 1": (["--adam_beta2", "1.0"], "adam_beta2: must be in [0, 1)"),
    "clip norm NaN": (["--max_grad_norm", "nan"], "max_grad_norm: must be ≥ 0, got nan"),
    "divergence threshold 0": (["--divergence_loss_threshold", "0"], "divergence_loss_threshold: must be > 0"),
    "rank not a number": (["--lora_r", "two"], "--lora_r/--lora-r: invalid int value: 'two'"),
    "boolean not a boolean": (["--fp16", "maybe"], "argument --fp16"),
    "unknown flag": (["--lerning_rate", "1e-3"], "--lerning_rate"),
    "missing checkpoint": (["--resume_from_checkpoint", "/no/such/checkpoint-4"], "not a complete checkpoint"),
}


@pytest.mark.parametrize("case", GLUE_FLAGS)
def test_a_glue_setting_out_of_range_or_of_the_wrong_type(case, capsys, tiny_bert_dir, glue, tmp_path):
    argv, message = GLUE_FLAGS[case]
    assert message in glue_error(capsys, tiny_bert_dir, glue, tmp_path, *argv)


def latin1(path, text: str) -> None:
    path.write_bytes(text.encode("latin-1"))


GLUE_FILES = {  # a file under the GLUE folder (or --train_file), what it holds, what the line says
    "0-byte train TSV": ("SST-2/train.tsv", b"", "train.tsv: empty file"),
    "train TSV of a header only": ("SST-2/train.tsv", b"sentence\tlabel\n", "train.tsv: no examples below its header"),
    "dev TSV of a header only": ("SST-2/dev.tsv", b"sentence\tlabel\n", "dev.tsv: no examples below its header"),
    "Latin-1 dev TSV": (
        "SST-2/dev.tsv",
        "sentence\tlabel\ncaf\xe9\t1\n".encode("latin-1"),
        "dev.tsv line 2: not UTF-8",
    ),
    "TSV row short of columns": ("SST-2/train.tsv", b"sentence\tlabel\nfine\n", "train.tsv line 2: 1 columns"),
}


@pytest.mark.parametrize("case", GLUE_FILES)
def test_a_malformed_glue_file_is_named_with_its_line(case, capsys, tiny_bert_dir, glue, tmp_path):
    name, content, message = GLUE_FILES[case]
    (glue / name).write_bytes(content)
    assert message in glue_error(capsys, tiny_bert_dir, glue, tmp_path)


USER_FILES = {  # --train_file contents
    "JSONL with a broken line": (
        "t.jsonl",
        '{"sentence": "a", "label": 1}\n{"sentence": "b",\n',
        "t.jsonl line 2: not JSON",
    ),
    "JSONL row that is a list": ("t.jsonl", '["a", 1]\n', "t.jsonl line 1: a row must be a JSON object, got list"),
    "JSON object, not rows": ("t.json", '{"data": [{"sentence": "a", "label": 1}]}', "missing column 'sentence'"),
    "JSON list of strings": ("t.json", '["a", "b"]', "t.json: row 1 must be a JSON object, got str"),
    "JSON that does not parse": ("t.json", '[{"sentence": "a",', "t.json line 1: not JSON"),
    "CSV of a header only": ("t.csv", "sentence,label\n", "t.csv: no rows below its header"),
    "empty JSONL": ("t.jsonl", "\n\n", "t.jsonl: no rows"),
    "a folder as a file": ("folder.csv/", "", "a folder, not a data file"),
}


@pytest.mark.parametrize("case", USER_FILES)
def test_a_malformed_user_file_is_named_with_its_line(case, capsys, tiny_bert_dir, tmp_path):
    name, content, message = USER_FILES[case]
    path = tmp_path / name.rstrip("/")
    path.mkdir() if name.endswith("/") else path.write_text(content)
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--train_file", str(path)]
    line = one_error_line(capsys, "run_glue.py", run_glue.main([*argv, "--output_dir", str(tmp_path / "out")]))
    assert message in line


def test_a_validation_file_beside_a_glue_folder_is_read_not_ignored(capsys, tiny_bert_dir, glue, tmp_path):
    write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], [["good movie", 9]])
    line = glue_error(capsys, tiny_bert_dir, glue, tmp_path, "--validation_file", str(tmp_path / "dev.tsv"))
    assert "dev.tsv line 2: label '9' is outside the label set" in line


def test_sequences_longer_than_the_encoder_can_take(capsys, tiny_bert_dir, glue, tmp_path):
    write_tsv(glue / "SST-2" / "train.tsv", ["sentence", "label"], [[" ".join(["good"] * 100), 1]])
    line = glue_error(capsys, tiny_bert_dir, glue, tmp_path, "--max_seq_length", "128")
    assert "max_seq_length (examples of 102 tokens): 102 tokens is above the model's context" in line


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.mkdir(), "holds no config.json (not a model folder)"),
        (lambda p: p.write_text("not a model"), "is a file, not a model folder"),
        (lambda p: None, "model_name_or_path: no such folder"),
        (lambda p: (p.mkdir(), (p / "config.json").write_text('{"model_type": "bert"}')), "holds no weights"),
    ],
    ids=["empty folder", "text file", "missing", "config without weights"],
)
def test_a_model_path_that_holds_no_model(make, message, capsys, glue, tmp_path):
    model = tmp_path / "model"
    make(model)
    argv = ["--model_name_or_path", str(model), "--task_name", "sst2", "--glue_dir", str(glue)]
    line = one_error_line(capsys, "run_glue.py", run_glue.main([*argv, "--output_dir", str(tmp_path / "out")]))
    assert message in line


@pytest.mark.parametrize("where", ["a file", "below a file"])
def test_an_output_dir_that_cannot_be_written(where, capsys, tiny_bert_dir, glue, tmp_path):
    (tmp_path / "taken").write_text("")
    out = tmp_path / "taken" if where == "a file" else tmp_path / "taken" / "run"
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--glue_dir", str(glue)]
    line = one_error_line(capsys, "run_glue.py", run_glue.main([*argv, "--output_dir", str(out)]))
    assert "output_dir: " in line and ("is a file" in line or "cannot write into" in line)


def test_a_malformed_config_file_is_named_with_its_line(capsys, tiny_bert_dir, glue, tmp_path):
    (tmp_path / "recipe.yaml").write_text("lora_r: 4\nlearning_rate: [1e-3\n")
    line = glue_error(capsys, tiny_bert_dir, glue, tmp_path, "--config", str(tmp_path / "recipe.yaml"))
    assert "config: " in line and "recipe.yaml line" in line and "not valid YAML" in line


def llm_error(capsys, tiny_llama_dir, tiny_corpus_dir, tmp_path, *argv) -> str:
    base = ["--model_name_or_path", str(tiny_llama_dir), "--task_name", "text", "--data_dir", str(tiny_corpus_dir)]
    code = run_llm.main([*base, "--output_dir", str(tmp_path / "out"), "--block_size", "64", *argv])
    return one_error_line(capsys, "run_llm.py", code)


LLM_FLAGS = {
    "block size 0": (["--block_size", "0"], "block_size: must be a positive integer"),
    "eval cap negative": (["--max_eval_samples=-1"], "max_eval_samples: must be a non-negative integer (or unset)"),
    "batch size 0": (["--per_device_train_batch_size", "0"], "per_device_train_batch_size: must be a positive"),
    "epochs NaN, no step cap": (["--max_steps=-1", "--num_train_epochs", "nan"], "num_train_epochs: must be > 0"),
    "max new tokens 0": (["--max_new_tokens", "0"], "max_new_tokens: must be a positive integer"),
    "a file the task ignores": (["--train_file", "{corpus}/doc0.txt"], "train_file: task text does not read it"),
    "MMLU shots the task ignores": (["--mmlu_shots", "5"], "mmlu_shots: task text does not read it"),
    "validation fraction 1": (["--validation_fraction", "1"], "validation_fraction: must be in (0, 1)"),
}


@pytest.mark.parametrize("case", LLM_FLAGS)
def test_an_lm_setting_out_of_range_or_ignored(case, capsys, tiny_llama_dir, tiny_corpus_dir, tmp_path):
    argv, message = LLM_FLAGS[case]
    argv = [a.replace("{corpus}", str(tiny_corpus_dir)) for a in argv]
    assert message in llm_error(capsys, tiny_llama_dir, tiny_corpus_dir, tmp_path, *argv)


@pytest.mark.parametrize(
    "task, files, message",
    [
        ("wikitext2", {"train.txt": b"caf\xe9\n", "test.txt": b"text\n"}, "train.txt line 1: not UTF-8 text"),
        ("gsm8k", {"train.jsonl": b'{"question": "Q", "answer": "#### 1"}\n{', "test.jsonl": b""}, "line 2: not JSON"),
        ("gsm8k", {"train.jsonl": b"[1, 2]\n", "test.jsonl": b""}, "train.jsonl line 1: a row must be a JSON object"),
    ],
    ids=["Latin-1 WikiText", "GSM8K broken line", "GSM8K row that is a list"],
)
def test_a_malformed_lm_file_is_named_with_its_line(task, files, message, capsys, tiny_llama_dir, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    argv = ["--model_name_or_path", str(tiny_llama_dir), "--task_name", task, "--data_dir", str(folder)]
    line = one_error_line(capsys, "run_llm.py", run_llm.main([*argv, "--output_dir", str(tmp_path / "out")]))
    assert message in line


def test_an_empty_instruction_file(capsys, tiny_llama_dir, tmp_path):
    (tmp_path / "flan.jsonl").write_text("\n")
    argv = ["--model_name_or_path", str(tiny_llama_dir), "--task_name", "instruct", "--train_file"]
    code = run_llm.main([*argv, str(tmp_path / "flan.jsonl"), "--output_dir", str(tmp_path / "out")])
    assert "flan.jsonl: no rows" in one_error_line(capsys, "run_llm.py", code)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_a_gpu_only_flag_in_a_recipe_on_a_cpu(capsys, tiny_bert_dir, glue, tmp_path):
    (tmp_path / "recipe.yaml").write_text("bf16: true\nfp16: true\n")
    line = glue_error(capsys, tiny_bert_dir, glue, tmp_path, "--config", str(tmp_path / "recipe.yaml"))
    assert "fp16: requires a CUDA GPU" in line


MORE_FILES = {  # --train_file contents the runner must refuse, naming the file and row
    "a NaN label": ("t.jsonl", '{"sentence": "a", "label": NaN}\n', "t.jsonl line 1: NaN is not a number a file may"),
    "JSON nested too deeply": ("t.json", "[" * 100000, "t.json line 1: not JSON (nested too deeply)"),
    "a null sentence": ("t.jsonl", '{"sentence": null, "label": 1}\n', "row 1: field 'sentence' must be text"),
    "too few rows to split": ("t.tsv", "sentence\tlabel\n" + "good\t1\n" * 4, "no validation examples left"),
}


@pytest.mark.parametrize("case", MORE_FILES)
def test_a_user_file_whose_values_cannot_train(case, capsys, tiny_bert_dir, tmp_path):
    name, content, message = MORE_FILES[case]
    (tmp_path / name).write_text(content)
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--train_file", str(tmp_path / name)]
    line = one_error_line(capsys, "run_glue.py", run_glue.main([*argv, "--output_dir", str(tmp_path / "out")]))
    assert message in line


def test_a_regression_label_that_is_not_finite(capsys, tiny_bert_dir, tmp_path):
    write_tsv(tmp_path / "t.tsv", ["sentence1", "sentence2", "score"], [["a", "b", "nan"], ["c", "d", "1.0"]])
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "stsb", "--train_file", str(tmp_path / "t.tsv")]
    argv += ["--validation_file", str(tmp_path / "t.tsv"), "--output_dir", str(tmp_path / "out")]
    line = one_error_line(capsys, "run_glue.py", run_glue.main(argv))
    assert "t.tsv line 2: label 'nan' is not a finite number" in line


TRAINER = {
    "an abbreviated flag": (["--hub_tok", "hf_x"], "--hub_tok"),
    "an empty output folder": (["--output_dir", " "], "output_dir: must name a folder"),
    "an unknown logger": (["--report_to", "bogus"], "report_to: bogus is not supported"),
    "an optimizer without its package": (
        ["--optim", "adamw_bnb_8bit"],
        "optim: adamw_bnb_8bit needs the bitsandbytes",
    ),
    "scheduler arguments not an object": (["--lr_scheduler_kwargs", "[1, 2]"], "lr_scheduler_kwargs: must be a JSON"),
    "a best-model metric never evaluated": (["--metric_for_best_model", "bogus"], "'bogus' is not evaluated here"),
    "a typo among target modules": (["--lora_target_modules", "query", "valu"], "no module named 'valu'"),
    "a head that is not there": (["--modules_to_save", "bogus"], "modules_to_save: no module named bogus"),
}


@pytest.mark.parametrize("case", TRAINER)
def test_a_setting_the_trainer_would_reject_only_after_loading(case, capsys, tiny_bert_dir, glue, tmp_path):
    argv, message = TRAINER[case]
    assert message in glue_error(capsys, tiny_bert_dir, glue, tmp_path, *argv)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: (m / "config.json").write_text("[]"), "model_name_or_path: cannot read a model config"),
        (lambda m: (m / "model.safetensors").write_bytes(b"x" * 8), "model.safetensors is cut short"),
    ],
    ids=["config that is a list", "weights cut short"],
)
def test_a_damaged_model_folder(damage, message, capsys, tiny_bert_dir, glue, tmp_path):
    shutil.copytree(tiny_bert_dir, tmp_path / "model")
    damage(tmp_path / "model")
    argv = ["--model_name_or_path", str(tmp_path / "model"), "--task_name", "sst2", "--glue_dir", str(glue)]
    line = one_error_line(capsys, "run_glue.py", run_glue.main([*argv, "--output_dir", str(tmp_path / "out")]))
    assert message in line


def test_an_instruction_row_whose_response_is_not_text(capsys, tiny_llama_dir, tmp_path):
    (tmp_path / "flan.jsonl").write_text('{"prompt": "Q", "response": [1, 2]}\n')
    argv = ["--model_name_or_path", str(tiny_llama_dir), "--task_name", "instruct", "--train_file"]
    code = run_llm.main([*argv, str(tmp_path / "flan.jsonl"), "--output_dir", str(tmp_path / "out")])
    assert "flan.jsonl row 1: field 'response' must be text, got list" in one_error_line(capsys, "run_llm.py", code)
