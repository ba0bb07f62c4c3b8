"""Packed run_glue (issue 6): a pack of K configurations gives each the results of its own single run."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch._dynamo.utils import counters
from transformers import RobertaConfig, RobertaModel

import run_glue
from lorakit.core.errors import ConfigError
from lorakit.runs.pack import run_pack

CONFIGS = [("A", 1e-3, 1), ("B", 1e-3, 4), ("A", 4e-3, 4), ("B", 4e-3, 1)]  # init, lr, LoRA+ ratio
COMMON = ["--task_name", "sst2", "--max_steps", "20", "--per_device_train_batch_size", "4", "--logging_steps", "5"]
COMMON += ["--eval_strategy", "no", "--lora_dropout", "0", "--seed", "3", "--warmup_steps", "2"]


def argv(model, glue_dir, out, scheme, lr, ratio, *extra) -> list[str]:
    settings = ["--model_name_or_path", str(model), "--glue_dir", str(glue_dir), "--output_dir", str(out)]
    settings += ["--lora_init", scheme, "--learning_rate", str(lr), "--loraplus_lr_ratio", str(ratio)]
    return [*settings, *COMMON, *extra]


def adapter(folder) -> dict:
    return load_file(folder / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def no_dropout_roberta(no_dropout_bert, tmp_path_factory):
    """A tiny RoBERTa (its head: a dense layer, frozen by default, then out_proj) with the BERT test tokenizer."""
    folder = tmp_path_factory.mktemp("roberta_no_dropout")
    for item in no_dropout_bert.iterdir():
        if item.name != "config.json" and not item.name.startswith("model"):
            (folder / item.name).write_bytes(item.read_bytes())
    config = RobertaConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=80, type_vocab_size=2, pad_token_id=0, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(folder)
    return folder


CASES = {  # name → (model fixture, configurations, extra settings)
    "plain": ("no_dropout_bert", CONFIGS, []),
    "gradient accumulation": ("no_dropout_bert", CONFIGS, ["--gradient_accumulation_steps", "2"]),
    "evaluation every 6 steps": ("no_dropout_bert", CONFIGS, ["--eval_strategy", "steps", "--eval_steps", "6"]),
    "no clipping": ("no_dropout_bert", CONFIGS, ["--max_grad_norm", "0"]),
    "gradient checkpointing": ("no_dropout_bert", CONFIGS, ["--gradient_checkpointing", "true"]),
    "frozen head dense (RoBERTa)": ("no_dropout_roberta", CONFIGS, []),
    "frozen A": ("no_dropout_bert", [("A", 1e-3, 1), ("A", 4e-3, 4)], ["--freeze_lora_A", "true"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_pack_equals_its_single_runs(case, tiny_glue_dir, tmp_path, request):
    fixture, configs, extra = CASES[case]
    model = request.getfixturevalue(fixture)
    singles = [argv(model, tiny_glue_dir, tmp_path / f"single{i}", *c, *extra) for i, c in enumerate(configs)]
    for settings in singles:
        assert run_glue.main(settings) == 0
    packed = [argv(model, tiny_glue_dir, tmp_path / f"packed{i}", *c, *extra) for i, c in enumerate(configs)]
    assert run_pack("glue", packed) == 0
    for i in range(len(configs)):
        single = json.loads((tmp_path / f"single{i}" / "metrics.json").read_text())
        ours = json.loads((tmp_path / f"packed{i}" / "metrics.json").read_text())
        assert ours["status"] == single["status"] == "done"
        assert ours["packed"] == {"index": i, "size": len(configs)}
        assert [e["step"] for e in ours["evaluations"]] == [e["step"] for e in single["evaluations"]]
        for key in ("eval_loss", "eval_accuracy"):
            assert ours["final"][key] == pytest.approx(single["final"][key], rel=1e-5), key
        theirs, mine = adapter(tmp_path / f"single{i}"), adapter(tmp_path / f"packed{i}")
        assert theirs.keys() == mine.keys()
        for name in theirs:
            error = (mine[name] - theirs[name]).norm() / theirs[name].norm().clamp_min(1e-12)
            assert error <= 1e-5, name


@pytest.mark.parametrize("extra", [[], ["--max_grad_norm", "0"]], ids=["clipped", "unclipped"])
def test_a_diverging_configuration_is_frozen_and_the_others_keep_their_results(
    extra, no_dropout_bert, tiny_glue_dir, tmp_path
):
    configs = [("A", 1e-3, 1), ("A", 1e6, 1)]
    packed = [argv(no_dropout_bert, tiny_glue_dir, tmp_path / f"packed{i}", *c, *extra) for i, c in enumerate(configs)]
    assert run_pack("glue", packed) == 0
    alone = argv(no_dropout_bert, tiny_glue_dir, tmp_path / "alone", *configs[0], *extra)
    assert run_glue.main(alone) == 0
    sane = json.loads((tmp_path / "packed0" / "metrics.json").read_text())
    wild = json.loads((tmp_path / "packed1" / "metrics.json").read_text())
    single = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    assert wild["status"] == "diverged" and wild["diverged_at_step"] >= 1 and "training loss" in wild["reason"]
    assert not (tmp_path / "packed1" / "adapter_model.safetensors").exists()
    assert sane["status"] == "done"
    assert sane["final"]["eval_loss"] == pytest.approx(single["final"]["eval_loss"], rel=1e-5)
    for name, value in adapter(tmp_path / "alone").items():
        torch.testing.assert_close(adapter(tmp_path / "packed0")[name], value, rtol=1e-4, atol=1e-6)


def test_a_compiled_pack_traces_whole_and_equals_its_uncompiled_single_runs(no_dropout_bert, tiny_glue_dir, tmp_path):
    """--torch_compile in a pack: dynamo captures the packed model without a graph break (on a GPU every break costs
    kernel launches) and training gives the single runs' results. aot_eager runs dynamo and AOTAutograd, as inductor
    does, without generating C++ code."""
    compiled = ["--torch_compile", "true", "--torch_compile_backend", "aot_eager"]
    configs = CONFIGS[1:3]
    for i, config in enumerate(configs):
        assert run_glue.main(argv(no_dropout_bert, tiny_glue_dir, tmp_path / f"single{i}", *config)) == 0
    torch._dynamo.reset()
    counters.clear()
    members = [
        argv(no_dropout_bert, tiny_glue_dir, tmp_path / f"packed{i}", *c, *compiled) for i, c in enumerate(configs)
    ]
    assert run_pack("glue", members) == 0
    assert counters["stats"]["unique_graphs"] >= 1 and not counters["graph_break"], dict(counters["graph_break"])
    for i in range(len(configs)):
        single = json.loads((tmp_path / f"single{i}" / "metrics.json").read_text())
        ours = json.loads((tmp_path / f"packed{i}" / "metrics.json").read_text())
        assert ours["final"]["eval_loss"] == pytest.approx(single["final"]["eval_loss"], rel=1e-5)
        for name, value in adapter(tmp_path / f"single{i}").items():
            mine = adapter(tmp_path / f"packed{i}")[name]
            assert (mine - value).norm() / value.norm().clamp_min(1e-12) <= 1e-5, name


def test_a_pack_whose_adapters_all_diverged_resumes_to_the_same_ending(no_dropout_bert, tiny_glue_dir, tmp_path):
    saving = ["--save_strategy", "steps", "--save_steps", "1"]
    configs = [("A", 1e6, 1), ("B", 1e7, 1)]
    members = [argv(no_dropout_bert, tiny_glue_dir, tmp_path / f"m{i}", *c, *saving) for i, c in enumerate(configs)]
    assert run_pack("glue", members, str(tmp_path / "pack")) == 0
    first = [json.loads((tmp_path / f"m{i}" / "metrics.json").read_text()) for i in range(2)]
    checkpoint = max((tmp_path / "pack").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    again = [[*m, "--resume_from_checkpoint", str(checkpoint)] for m in members]
    assert run_pack("glue", again, str(tmp_path / "pack")) == 0
    for i in range(2):
        metrics = json.loads((tmp_path / f"m{i}" / "metrics.json").read_text())
        assert metrics["status"] == "diverged"
        assert (metrics["diverged_at_step"], metrics["reason"]) == (first[i]["diverged_at_step"], first[i]["reason"])


def test_configurations_that_cannot_share_a_pack_are_refused(no_dropout_bert, tiny_glue_dir, tmp_path):
    first = argv(no_dropout_bert, tiny_glue_dir, tmp_path / "a", "A", 1e-3, 1)
    other_seed = [*argv(no_dropout_bert, tiny_glue_dir, tmp_path / "b", "A", 2e-3, 1), "--seed", "4"]
    with pytest.raises(ConfigError, match="differs in seed"):
        run_pack("glue", [first, other_seed])
