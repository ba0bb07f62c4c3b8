"""A finished run's model card: the adapter folder's README.md (the file `push_to_hub` uploads), with the hub's YAML
metadata and what makes this adapter what it is — the init scheme, its distribution, scale and seed, the LoRA+ ratio
and groups, the data and the final metrics — read from the run's own run_config.json and metrics.json. PEFT's loader
ignores README.md, so `PeftModel.from_pretrained` loads the folder as before."""

from pathlib import Path

import yaml

from lorakit.core.atomic import replace_atomically
from lorakit.core.run_folder import read_json_file
from lorakit.models.arguments import EMBEDDED_CAUSAL_LM, EMBEDDED_ENCODER

CARD = "README.md"
HUB_IDS = {
    EMBEDDED_ENCODER: "sentence-transformers/all-MiniLM-L6-v2",
    EMBEDDED_CAUSAL_LM: "HuggingFaceTB/SmolLM2-135M-Instruct",
}  # fmt: skip  the embedded defaults' origins
SCHEMES = {"A": "Init[A]: A random, B = 0 (PEFT's default)", "B": "Init[B]: A = 0, B random"}
LOCAL_PREFIXES = ("/", "./", "../", "~")


def hub_base(model_name: str) -> str | None:
    """The base as the hub names it (an embedded default's origin), or None for a local path."""
    name = HUB_IDS.get(model_name, model_name)
    return None if name.startswith(LOCAL_PREFIXES) or Path(name).exists() else name


def metadata(config: dict) -> dict:
    model, init = config.get("model") or {}, config.get("init") or {}
    training, data = config.get("training") or {}, config.get("data") or {}
    tags = ["lora", "peft", "lorakit", f"init-{init.get('scheme', 'unknown')}"]
    tags += ["loraplus"] if (training.get("loraplus_lr_ratio") or 1) != 1 else []
    tags += [str(data["task_name"])] if data.get("task_name") else []
    base = hub_base(str(model.get("model_name_or_path", "")))
    return {**({"base_model": base} if base else {}), "library_name": "peft", "tags": tags}


def table(rows: list[tuple[str, object]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows if value not in (None, ""))]


def settings_rows(config: dict) -> list[tuple[str, object]]:
    init, lora = config.get("init") or {}, config.get("lora") or {}
    training, data = config.get("training") or {}, config.get("data") or {}
    scheme = init.get("scheme")
    ratio = training.get("loraplus_lr_ratio") or 1
    return [
        ("base model", (config.get("model") or {}).get("model_name_or_path")),
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
    lines += [f"| {g.get('name')} | {g.get('lr'):.3g} | {g.get('weight_decay')} | {g.get('num_params'):,} |"
              for g in groups]  # fmt: skip
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
        lines.append(f"| {key} | {'' if earlier is None else f'{earlier:.6g}'} | {value:.6g} |")
    return lines


LOADERS = {"SEQ_CLS": "AutoPeftModelForSequenceClassification", "CAUSAL_LM": "AutoPeftModelForCausalLM"}


def model_card(config: dict, metrics: dict, task_type: str | None = None) -> str:
    """The card's text: YAML metadata, the settings, the optimizer groups, the metrics and how to load it."""
    head = "---\n" + yaml.safe_dump(metadata(config), sort_keys=False) + "---\n"
    scheme = (config.get("init") or {}).get("scheme", "?")
    loader = LOADERS.get(task_type or "", "AutoPeftModel")
    lines = [f"# A LoRA adapter trained with Init[{scheme}]", "",
             "Trained with the LoRA init toolkit, which compares the two ways of starting LoRA at BA = 0 (Hayou, "
             "Ghosh & Yu, *The Impact of Initialization on LoRA Finetuning Dynamics*, NeurIPS 2024). Its "
             "adapter_config.json cannot say which init it had (`init_lora_weights` is PEFT's flag); this card does.",
             "", "## Settings", "", *table(settings_rows(config)), "", "## Optimizer groups", "",
             *group_rows(config.get("optimizer_groups")), "", "## Results", "", *metric_rows(metrics), "",
             "## Loading", "", "```python", f"from peft import {loader}", "",
             f'model = {loader}.from_pretrained("<this folder or hub id>")', "```", "",
             "Every setting is in run_config.json beside this card.", ""]  # fmt: skip
    return head + "\n" + "\n".join(lines)


def write_model_card(run_dir: Path) -> Path | None:
    """Write `run_dir`/README.md from the run's records (nothing when they are missing); returns its path."""
    config, metrics = read_json_file(run_dir / "run_config.json"), read_json_file(run_dir / "metrics.json")
    if not isinstance(config, dict) or not isinstance(metrics, dict):
        return None
    adapter = read_json_file(run_dir / "adapter_config.json")
    text = model_card(config, metrics, adapter.get("task_type") if isinstance(adapter, dict) else None)
    replace_atomically(run_dir / CARD, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return run_dir / CARD
