"""A finished run's model card: the adapter folder's README.md (the file `push_to_hub` uploads), with the hub's YAML
metadata and what makes this adapter what it is — the init scheme, its distribution, scale and seed, the LoRA+ ratio
and groups, the data and the final metrics — read from the run's own run_config.json and metrics.json. PEFT's loader
ignores README.md, so `PeftModel.from_pretrained` loads the folder as before."""

import logging
from pathlib import Path

import yaml

from lorakit.core.atomic import replace_atomically
from lorakit.core.run_folder import read_json_file
from lorakit.models.arguments import EMBEDDED_CAUSAL_LM, EMBEDDED_ENCODER
from lorakit.models.loading import LOCAL_PREFIXES
from lorakit.models.lora import head_labels

logger = logging.getLogger(__name__)
CARD = "README.md"
# The embedded encoder is its hub model's own files; the embedded decoder is dequantized from a Q4_1 GGUF of its hub
# model, so its weights are not the hub's and the card names no base_model for it.
HUB_IDS = {EMBEDDED_ENCODER: "sentence-transformers/all-MiniLM-L6-v2", EMBEDDED_CAUSAL_LM: None}
SCHEMES = {"A": "Init[A]: A random, B = 0 (PEFT's default)", "B": "Init[B]: A = 0, B random"}


def hub_base(config: dict) -> str | None:
    """The base as the hub names it (an embedded encoder's origin), or None: a local folder, a GGUF-derived base."""
    model = config.get("model") or {}
    name = str(model.get("model_name_or_path", ""))
    if name in HUB_IDS:
        return HUB_IDS[name]
    local = name.startswith(LOCAL_PREFIXES) or Path(name).is_dir()
    return None if local or model.get("gguf_file") else name


def metadata(config: dict) -> dict:
    init, training, data = (config.get(key) or {} for key in ("init", "training", "data"))
    tags = ["lora", "peft", "lorakit", f"init-{init.get('scheme', 'unknown')}"]
    tags += ["loraplus"] if (training.get("loraplus_lr_ratio") or 1) != 1 else []
    tags += [str(data["task_name"])] if data.get("task_name") else []
    base = hub_base(config)
    return {**({"base_model": base} if base else {}), "library_name": "peft", "tags": tags}


def quantized(model: dict) -> str:
    if model.get("load_in_4bit"):
        return "4-bit NF4 (bitsandbytes)"
    if model.get("load_in_8bit"):
        return "8-bit (bitsandbytes)"
    return f"dequantized from {model['gguf_file']}" if model.get("gguf_file") else ""


def number(value, spec: str) -> str:
    """`value` formatted by `spec` when it is a number, else as it is (a card never fails on a value)."""
    return format(value, spec) if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def table(rows: list[tuple[str, object]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows if value not in (None, ""))]


def settings_rows(config: dict) -> list[tuple[str, object]]:
    init, lora = config.get("init") or {}, config.get("lora") or {}
    training, data = config.get("training") or {}, config.get("data") or {}
    scheme = init.get("scheme")
    ratio = training.get("loraplus_lr_ratio") or 1
    return [
        ("base model", (config.get("model") or {}).get("model_name_or_path")),
        ("base quantized", quantized(config.get("model") or {})),
        ("init scheme", SCHEMES.get(scheme, scheme)),
        ("init distribution", init.get("distribution")),
        ("init scale", init.get("scale")),
        ("init variance", init.get("variance_rule")),
        ("seed (init, data order)", init.get("seed", training.get("seed"))),
        ("LoRA r, α, dropout", f"{lora.get('lora_r')}, {lora.get('lora_alpha')}, {lora.get('lora_dropout')}"),
        ("LoRA targets", ", ".join(lora.get("lora_target_modules") or [])),
        ("learning rate", training.get("learning_rate")),
        ("LoRA+ ratio", f"{ratio:g} (lr_B = {ratio:g} · lr_A)" if ratio != 1 else "1 (off)"),
        ("data", data.get("task_name")),
        ("data source", (config.get("data_sizes") or {}).get("source")),
    ]


def group_rows(groups) -> list[str]:
    if not isinstance(groups, list):
        return [str(groups)]
    lines = ["| group | lr | weight decay | parameters |", "|---|---|---|---|"]
    lines += [f"| {g.get('name')} | {number(g.get('lr'), '.3g')} | {g.get('weight_decay')} | "
              f"{number(g.get('num_params'), ',')} |" for g in groups]  # fmt: skip
    return lines


def measured(key: str) -> bool:
    """A metric, not the step, epoch or evaluation speed."""
    return key not in ("step", "epoch") and not key.endswith(("_runtime", "_per_second"))


def metric_rows(metrics: dict) -> list[str]:
    final = {k: v for k, v in (metrics.get("final") or {}).items() if isinstance(v, int | float) and measured(k)}
    before = metrics.get("before") or {}
    lines = ["| metric | before training | final |", "|---|---|---|"]
    for key, value in final.items():
        earlier = before.get(key)
        lines.append(f"| {key} | {'' if earlier is None else number(earlier, '.6g')} | {number(value, '.6g')} |")
    return lines


LOADERS = {"SEQ_CLS": "AutoPeftModelForSequenceClassification", "CAUSAL_LM": "AutoPeftModelForCausalLM"}


def model_card(config: dict, metrics: dict, task_type: str | None = None, num_labels: int | None = None) -> str:
    """The card's text: YAML metadata, the settings, the optimizer groups, the metrics and how to load it."""
    head = "---\n" + yaml.safe_dump(metadata(config), sort_keys=False) + "---\n"
    scheme = (config.get("init") or {}).get("scheme", "?")
    loader = LOADERS.get(task_type or "", "AutoPeftModel")
    labels = f", num_labels={num_labels}" if task_type == "SEQ_CLS" and num_labels else ""
    lines = [f"# A LoRA adapter trained with Init[{scheme}]", "",
             "Trained with the LoRA init toolkit, which compares the two ways of starting LoRA at BA = 0 (Hayou, "
             "Ghosh & Yu, *The Impact of Initialization on LoRA Finetuning Dynamics*, NeurIPS 2024). Its "
             "adapter_config.json cannot say which init it had (`init_lora_weights` is PEFT's flag); this card does.",
             "", "## Settings", "", *table(settings_rows(config)), "", "## Optimizer groups", "",
             *group_rows(config.get("optimizer_groups")), "", "## Results", "", *metric_rows(metrics), "",
             "## Loading", "", "```python", f"from peft import {loader}", "",
             f'model = {loader}.from_pretrained("<this folder or hub id>"{labels})', "```", "",
             "Every setting is in run_config.json beside this card.", ""]  # fmt: skip
    return head + "\n" + "\n".join(lines)


def write_model_card(run_dir: Path, final: dict | None = None) -> Path | None:
    """Write `run_dir`/README.md from the run's records (`final`: its final metrics, when metrics.json has none yet);
    nothing when the records are missing, and a warning, never an error, when it cannot be written."""
    config, metrics = read_json_file(run_dir / "run_config.json"), read_json_file(run_dir / "metrics.json")
    if not isinstance(config, dict) or not isinstance(metrics, dict):
        return None
    try:
        adapter = read_json_file(run_dir / "adapter_config.json")
        task_type = adapter.get("task_type") if isinstance(adapter, dict) else None
        text = model_card(config, {"final": final, **metrics} if final and not metrics.get("final") else metrics,
                          task_type, head_labels(run_dir) if task_type == "SEQ_CLS" else None)  # fmt: skip
        replace_atomically(run_dir / CARD, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except Exception as err:  # the run is done and saved: a card is never worth failing it
        logger.warning("could not write the model card in %s: %s: %s", run_dir, type(err).__name__, err)
        return None
    return run_dir / CARD
