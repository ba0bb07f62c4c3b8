"""Every finished run's adapter folder describes itself: its README.md (the model card `push_to_hub` uploads) carries
the hub's metadata, the init scheme, its distribution, scale and seed, the LoRA+ ratio and groups, the data and the
final metrics; stock PEFT still loads the folder; each member of a pack has its own card."""

import json
from pathlib import Path

import yaml
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

import run_glue
from lorakit.runs.pack import run_pack

TRAIN = ["--max_steps", "3", "--per_device_train_batch_size", "8", "--eval_strategy", "no"]


def card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    return yaml.safe_load(front), body


def row(body: str, name: str, column: int = 1) -> str:
    """The `column`-th cell after the name of the card's table row `name` (-1: the last)."""
    line = next(line for line in body.splitlines() if line.startswith(f"| {name} |"))
    return line.strip("|").split("|")[column].strip()


def test_a_runs_card_names_its_init_seed_ratio_and_metrics_and_peft_still_loads_it(
    tmp_path, tiny_bert_dir, tiny_glue_dir
):
    out = tmp_path / "run"
    argv = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--glue_dir", str(tiny_glue_dir)]
    extra = ["--lora_init", "B", "--lora_init_scale", "0.5", "--seed", "3", "--loraplus_lr_ratio", "4"]
    assert run_glue.main([*argv, "--output_dir", str(out), *TRAIN, *extra]) == 0
    meta, body = card(out)
    assert meta["library_name"] == "peft" and "init-B" in meta["tags"] and "loraplus" in meta["tags"]
    assert "base_model" not in meta  # a local folder is no hub id
    assert row(body, "init scheme").startswith("Init[B]") and row(body, "init scale") == "0.5"
    assert row(body, "seed (init, data order)") == "3" and row(body, "LoRA+ ratio").startswith("4 ")
    accuracy = json.loads((out / "metrics.json").read_text())["final"]["eval_accuracy"]
    assert row(body, "eval_accuracy", -1) == f"{accuracy:.6g}"
    assert "| B | " in body and "| A | " in body  # the LoRA+ groups, each with its lr
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
    assert isinstance(PeftModel.from_pretrained(base, out), PeftModel)


def test_each_member_of_a_pack_has_its_own_card(tmp_path, tiny_bert_dir, tiny_glue_dir):
    common = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--glue_dir", str(tiny_glue_dir)]
    members = [[*common, *TRAIN, "--lora_init", init, "--output_dir", str(tmp_path / init)] for init in "AB"]
    assert run_pack("glue", members, str(tmp_path / "pack")) == 0
    for init in "AB":
        meta, body = card(tmp_path / init)
        assert f"init-{init}" in meta["tags"] and row(body, "init scheme").startswith(f"Init[{init}]")
