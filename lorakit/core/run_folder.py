"""What a run folder already holds, read without trusting it: its newest complete checkpoint, its earlier record,
and whether the run there was made with the same settings. Light (no torch), for the sweep tool too.

A rerun of a run's command resumes it: from the newest checkpoint whose files all parse (a checkpoint cut short by a
kill is passed over for the one before), or from step 0 when none is complete. A finished run (done or diverged) is
left as it is. ``--overwrite_output_dir true`` starts over.
"""

import json
import os
import shutil
import struct
import tempfile
import zipfile
from pathlib import Path

from lorakit.core.errors import ConfigError

WEIGHT_FILES = ("adapter_model.safetensors", "pack_adapters.safetensors", "model.safetensors", "pytorch_model.bin")
RECORDS = ("metrics.json", "run_config.json", "README.md")  # what --overwrite_output_dir removes, with checkpoints


def read_json_file(path: Path):
    """A JSON file's content, or None when it is missing or does not parse."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def safetensors_whole(path: Path) -> bool:
    """Whether a .safetensors file has a header that parses and every tensor's bytes (a truncated file has not)."""
    try:
        with open(path, "rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if size > path.stat().st_size - 8:
                return False
            header = json.loads(f.read(size))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
        return path.stat().st_size >= 8 + size + max(ends, default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return False


def file_whole(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return safetensors_whole(path)
    if path.suffix in (".pt", ".pth", ".bin"):
        return zipfile.is_zipfile(path)  # torch.save's format: a truncated archive has no central directory
    if path.suffix == ".json":
        return read_json_file(path) is not None
    return True


def checkpoint_step(checkpoint: Path) -> int | None:
    """The step of a checkpoint-N folder if it is complete: its trainer state parses, it holds weights, and every
    weights, optimizer, scheduler, RNG and JSON file in it is whole."""
    state = read_json_file(checkpoint / "trainer_state.json")
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return None
    if not any((checkpoint / name).is_file() for name in WEIGHT_FILES):
        return None
    if not all(file_whole(f) for f in checkpoint.iterdir() if f.is_file()):
        return None
    return state["global_step"]


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint-N in `folder` (see `checkpoint_step`), or None."""
    found = [p for p in Path(folder).glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for checkpoint in sorted(found, key=lambda p: -int(p.name.split("-")[-1])):
        if checkpoint_step(checkpoint) is not None:
            return checkpoint
    return None


def earlier_status(folder: Path) -> str | None:
    """The status in the folder's metrics.json, or None (no run there, or a record that does not parse)."""
    metrics = read_json_file(Path(folder) / "metrics.json")
    return metrics.get("status") if isinstance(metrics, dict) else None


def start_over(folder: Path) -> None:
    """Remove an earlier run's checkpoints and records from `folder` (--overwrite_output_dir)."""
    for checkpoint in Path(folder).glob("checkpoint-*"):
        shutil.rmtree(checkpoint, ignore_errors=True)
    for name in RECORDS:
        (Path(folder) / name).unlink(missing_ok=True)


def check_same_settings(folder: Path, settings: dict) -> None:
    """A run folder holding a run with other settings cannot be resumed into: a one-line error naming them."""
    earlier = read_json_file(Path(folder) / "run_config.json")
    kept = earlier.get("settings") if isinstance(earlier, dict) else None
    if not isinstance(kept, dict):
        return
    differ = sorted(k for k in set(kept) | set(settings) if kept.get(k) != settings.get(k))
    if differ:
        shown = ", ".join(f"{k} {kept.get(k)!r} → {settings.get(k)!r}" for k in differ[:3])
        raise ConfigError(
            f"output_dir: {folder} holds a run with other settings ({shown}{', …' if len(differ) > 3 else ''}); "
            "use another output_dir, or --overwrite_output_dir true to start over"
        )


def writable_dir(path: Path, what: str) -> Path:
    """`path` as a folder this process can write into (made if missing); else a one-line error naming `what`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what}: {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path, prefix=".write-test-")  # unique: processes may check at once
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"{what}: cannot write into {path} ({err.strerror or err})") from None
    return path


NOT_OURS = ("transformers.", "builtins")  # the Trainer's own arguments: only its TRAINER_SETTINGS count
TRAINER_SETTINGS = (  # the Trainer's own fields that change what a run computes
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "lr_scheduler_type", "warmup_steps",
    "seed", "data_seed", "optim", "fp16", "bf16", "train_sampling_strategy", "label_smoothing_factor",
)  # fmt: skip
RUN_ONLY = (  # where a run writes, logs, evaluates and saves: free to change between attempts
    "output_dir", "overwrite_output_dir", "resume_from_checkpoint", "cache_dir", "per_device_eval_batch_size",
    "eval_strategy", "save_strategy", "logging_steps", "logging_nan_inf_filter", "lora_diagnostics_steps",
    "lora_diagnostics_tokens",
)  # fmt: skip


def run_settings(sections: dict) -> dict:
    """What decides a run's numbers, as JSON values keyed "section.field": the fields the argument dataclasses of
    the project and of a task of one's own declare themselves, and the Trainer fields in `TRAINER_SETTINGS`, but not
    `RUN_ONLY` ones."""
    settings = {}
    for section, obj in sections.items():
        declared = {
            name
            for klass in type(obj).__mro__
            if not klass.__module__.startswith(NOT_OURS)
            for name in vars(klass).get("__annotations__", {})
        }
        for name in sorted((declared | set(TRAINER_SETTINGS)) - set(RUN_ONLY)):
            if hasattr(obj, name):
                settings[f"{section}.{name}"] = json.loads(json.dumps(getattr(obj, name), default=str))
    return settings


def prepare_run_folder(train_args, settings: dict) -> str | None:
    """Make `train_args.output_dir` ready before any model loads: start over (--overwrite_output_dir; the main
    process clears the folder), or, when it holds a run made with the same `settings`, resume an unfinished one from
    its newest complete checkpoint. Returns the status of a finished run found there (nothing to do), else None; a
    run with other settings there is an error."""
    folder = writable_dir(Path(train_args.output_dir), "output_dir")
    if train_args.overwrite_output_dir:
        if train_args.process_index == 0:
            start_over(folder)
        return None
    explicit = train_args.resume_from_checkpoint
    if explicit is not None and checkpoint_step(Path(explicit)) is None:
        raise ConfigError(f"resume_from_checkpoint: {explicit} is not a complete checkpoint")
    check_same_settings(folder, settings)
    status = earlier_status(folder)
    if status in ("done", "diverged") and explicit is None:
        return status
    if explicit is None:
        checkpoint = latest_checkpoint(folder)
        train_args.resume_from_checkpoint = str(checkpoint) if checkpoint is not None else None
    return None
