"""Packed run_llm (issue 6): a pack of K causal-LM configurations gives each the results of its own single run."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

import lorakit.sweeps.__main__ as cli
import run_llm
from lorakit.core.errors import ConfigError
from lorakit.packing.trainer import PackedTrainer
from lorakit.runs.pack import run_pack
from lorakit.tasks.lm.packed import as_prepared

CONFIGS = [("A", 2e-3, 1), ("B", 2e-3, 4), ("A", 8e-3, 4), ("B", 8e-3, 1)]  # init, lr, LoRA+ ratio
COMMON = ["--block_size", "32", "--max_steps", "20", "--per_device_train_batch_size", "2", "--logging_steps", "5"]
COMMON += ["--lora_dropout", "0", "--seed", "5", "--warmup_steps", "2", "--max_eval_samples", "4"]


def argv(model, data, out, scheme, lr, ratio, *extra) -> list[str]:
    """`data`: a folder of .txt documents (the text task), or the settings of another task."""
    task = ["--task_name", "text", "--data_dir", str(data)] if isinstance(data, Path) else data
    settings = ["--model_name_or_path", str(model), *task, "--output_dir", str(out), "--lora_init", scheme]
    return [*settings, "--learning_rate", str(lr), "--loraplus_lr_ratio", str(ratio), *COMMON, *extra]


def metrics(folder) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def adapter(folder) -> dict:
    return load_file(folder / "adapter_model.safetensors")


def assert_same_adapter(theirs: dict, mine: dict) -> None:
    assert theirs.keys() == mine.keys()
    for name in theirs:
        error = (mine[name] - theirs[name]).norm() / theirs[name].norm().clamp_min(1e-12)
        assert error <= 1e-5, name


GSM8K = ["--task_name", "gsm8k", "--max_new_tokens", "8", "--max_seq_length", "96"]  # prompt → answer, padded
CASES = {  # name → (task: text blocks or GSM8K, extra settings)
    "plain": ("text", []),
    "gradient accumulation": ("text", ["--gradient_accumulation_steps", "2"]),
    "held-out evaluation every 8 steps": ("text", ["--eval_strategy", "steps", "--eval_steps", "8"]),
    "gradient checkpointing": ("text", ["--gradient_checkpointing", "true"]),
    "padded GSM8K examples, gradient accumulation": ("gsm8k", ["--gradient_accumulation_steps", "2"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_pack_equals_its_single_runs(case, tiny_llama_dir, tiny_corpus_dir, tiny_gsm8k_dir, tmp_path):
    task, extra = CASES[case]
    data = tiny_corpus_dir if task == "text" else [*GSM8K, "--data_dir", str(tiny_gsm8k_dir)]
    for i, config in enumerate(CONFIGS):
        assert run_llm.main(argv(tiny_llama_dir, data, tmp_path / f"single{i}", *config, *extra)) == 0
    members = [argv(tiny_llama_dir, data, tmp_path / f"packed{i}", *c, *extra) for i, c in enumerate(CONFIGS)]
    assert run_pack("lm", members) == 0
    for i in range(len(CONFIGS)):
        single, ours = metrics(tmp_path / f"single{i}"), metrics(tmp_path / f"packed{i}")
        assert ours["status"] == single["status"] == "done"
        assert ours["packed"] == {"index": i, "size": len(CONFIGS)}
        assert ours["before"] == single["before"]
        assert ours["final"]["perplexity"] == pytest.approx(single["final"]["perplexity"], rel=1e-5)
        assert [e["step"] for e in ours["evaluations"]] == [e["step"] for e in single["evaluations"]]
        for mine, theirs in zip(ours["evaluations"], single["evaluations"], strict=True):
            assert mine["eval_loss"] == pytest.approx(theirs["eval_loss"], rel=1e-5)
            assert mine["eval_perplexity"] == pytest.approx(theirs["eval_perplexity"], rel=1e-5)
        assert_same_adapter(adapter(tmp_path / f"single{i}"), adapter(tmp_path / f"packed{i}"))
        if task == "gsm8k":
            assert ours["final"]["gsm8k_accuracy"] == single["final"]["gsm8k_accuracy"]
    learned = metrics(tmp_path / "packed2")
    assert learned["final"]["perplexity"] < 0.5 * learned["before"]["perplexity"]


def test_a_diverging_configuration_is_frozen_and_the_others_keep_their_results(
    tiny_llama_dir, tiny_corpus_dir, tmp_path
):
    configs = [("A", 2e-3, 1), ("B", 1e6, 16)]
    members = [argv(tiny_llama_dir, tiny_corpus_dir, tmp_path / f"packed{i}", *c) for i, c in enumerate(configs)]
    assert run_pack("lm", members) == 0
    assert run_llm.main(argv(tiny_llama_dir, tiny_corpus_dir, tmp_path / "alone", *configs[0])) == 0
    sane, wild, alone = (metrics(tmp_path / name) for name in ("packed0", "packed1", "alone"))
    assert wild["status"] == "diverged" and wild["diverged_at_step"] >= 1 and "training loss" in wild["reason"]
    assert not (tmp_path / "packed1" / "adapter_model.safetensors").exists()
    assert sane["status"] == "done"
    assert sane["final"]["perplexity"] == pytest.approx(alone["final"]["perplexity"], rel=1e-5)
    assert_same_adapter(adapter(tmp_path / "alone"), adapter(tmp_path / "packed0"))


def test_a_pack_that_died_resumes_from_its_adapters_only_checkpoint_as_its_single_runs_do(
    tiny_llama_dir, tiny_corpus_dir, tmp_path, monkeypatch
):
    saving = ["--save_strategy", "steps", "--save_steps", "10"]
    configs = CONFIGS[:2]
    for i, config in enumerate(configs):
        single = argv(tiny_llama_dir, tiny_corpus_dir, tmp_path / f"single{i}", *config, *saving)
        assert run_llm.main(single) == 0
        assert run_llm.main([*single, "--resume_from_checkpoint", str(tmp_path / f"single{i}" / "checkpoint-10")]) == 0
    members = [argv(tiny_llama_dir, tiny_corpus_dir, tmp_path / f"m{i}", *c, *saving) for i, c in enumerate(configs)]
    step, steps_taken = PackedTrainer.training_step, []

    def dies_at_step_13(self, *args, **kwargs):
        if self.state.global_step == 13:
            raise RuntimeError("the node went down")
        return step(self, *args, **kwargs)

    def counted(self, *args, **kwargs):
        steps_taken.append(self.state.global_step)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(PackedTrainer, "training_step", dies_at_step_13)
    with pytest.raises(RuntimeError, match="node went down"):
        run_pack("lm", members, str(tmp_path / "pack"))
    assert [metrics(tmp_path / f"m{i}")["status"] for i in range(2)] == ["failed", "failed"]
    checkpoint = tmp_path / "pack" / "checkpoint-10"
    saved = load_file(checkpoint / "pack_adapters.safetensors")
    assert not list(checkpoint.glob("model*.safetensors"))  # the frozen base is not copied into checkpoints
    assert saved["diverged_at"].tolist() == [-1, -1]
    assert all(".lora_A." in name or ".lora_B." in name for name in saved if name != "diverged_at")
    monkeypatch.setattr(PackedTrainer, "training_step", counted)
    assert (
        run_pack("lm", [[*m, "--resume_from_checkpoint", str(checkpoint)] for m in members], str(tmp_path / "pack"))
        == 0
    )
    assert steps_taken == list(range(10, 20))  # it went on from step 10, not from the start
    for i in range(len(configs)):
        ours = metrics(tmp_path / f"m{i}")
        assert ours["status"] == "done" and ours["resumed_from"] == str(checkpoint)
        assert ours["final"]["perplexity"] == pytest.approx(metrics(tmp_path / f"single{i}")["final"]["perplexity"])
        assert_same_adapter(adapter(tmp_path / f"single{i}"), adapter(tmp_path / f"m{i}"))


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; these tests set their own mixed precision, then leave none behind."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def accelerator(mixed_precision: str) -> Accelerator:
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=True, mixed_precision=mixed_precision)


def test_the_final_evaluation_runs_under_a_single_runs_autocast(fresh_accelerate_state):
    """A single run's final forward passes are autocast as `accelerate.prepare` leaves its model; so are a pack's."""
    config = LlamaConfig(
        vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj"]))
    ids = torch.randint(0, 50, (2, 8))
    plain = model(input_ids=ids).logits
    with as_prepared(model, accelerator("bf16")) as prepared:
        autocast = prepared(input_ids=ids).logits
    assert autocast.dtype == torch.float32 and not torch.equal(autocast, plain)  # bf16 inside, fp32 out
    assert "forward" not in vars(model) and torch.equal(model(input_ids=ids).logits, plain)  # put back
    with as_prepared(model, accelerator("no")) as prepared:
        assert torch.equal(prepared(input_ids=ids).logits, plain)


def test_options_a_pack_cannot_honour_are_refused(tiny_llama_dir, tiny_corpus_dir, tmp_path):
    first = argv(tiny_llama_dir, tiny_corpus_dir, tmp_path / "a", *CONFIGS[0])
    for option, value in (("--neftune_noise_alpha", "5"), ("--label_smoothing_factor", "0.1")):
        second = [*argv(tiny_llama_dir, tiny_corpus_dir, tmp_path / "b", *CONFIGS[1]), option, value]
        with pytest.raises(ConfigError, match=option.removeprefix("--")):
            run_pack("lm", [[*first, option, value], second])


def test_a_run_llm_sweep_trains_its_points_in_packs(tiny_llama_dir, tiny_corpus_dir, tmp_path, capsys):
    base = {"model_name_or_path": str(tiny_llama_dir), "task_name": "text", "data_dir": str(tiny_corpus_dir)}
    base |= {"block_size": 32, "max_steps": 6, "per_device_train_batch_size": 2, "lora_dropout": 0.0}
    base |= {"max_eval_samples": 4, "logging_steps": 2, "seed": 0}
    spec = {"name": "tiny_lm", "runner": "run_llm.py", "output_root": str(tmp_path / "out"), "base": base, "pack": 4}
    spec |= {"grid": {"learning_rate": [2e-3, 8e-3], "lora_init": ["A", "B"]}, "local": {"workers": 1}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert cli.main(["run", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("# pack of 4: ") == 1
    assert cli.main(["run", str(path)]) == 0
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(table) == 4 and (table["status"] == "done").all() and (table["attempts"] == 1).all()
    for run_dir in (tmp_path / "out" / "runs").iterdir():
        ours = metrics(run_dir)
        assert ours["packed"]["size"] == 4 and ours["final"]["perplexity"] < ours["before"]["perplexity"]
        assert (run_dir / "adapter_model.safetensors").is_file()
