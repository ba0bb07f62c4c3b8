"""Inputs the GPU check's steps load, written by steps of their own (each in its own process, under its timeout).

- `prepare-decoder`: a random Llama checkpoint of a real architecture's shape (bitsandbytes quantizes while loading,
  so the 4-bit cases need one on disk).
- `prepare-encoder`: a random RoBERTa of a real architecture's shape with a word-level tokenizer, a GLUE-layout SST-2
  folder whose sentences fill the sequence length, and `pack.json`, a pack of two run_glue.py configurations (Init[A]
  and Init[B]) in the setting of `benchmarks.packed_glue`'s cases, for `lorakit.packing.probe`.
- `probe-pack`: `--pack auto`'s measurement of that pack as the sweep tool makes it (`probe_in_subprocess` for packs
  of 1 and 2, in processes that see the GPU a worker sees), the pack sizes it would pick, and the device's name as
  `--pack auto` keys its kept figures.
"""

import json
import time
from pathlib import Path

import torch

WORDS = "good bad great awful fine poor movie film plot actor story dull bright sad happy a the is was not".split()
SPECIAL = ["[CLS]", "[PAD]", "[SEP]", "[UNK]", "[MASK]"]  # [PAD] is id 1, RoBERTa's padding index


def prepare_decoder(arch: str, folder: Path) -> dict:
    from benchmarks.llm_training import save_random_checkpoint

    save_random_checkpoint(arch, folder)
    return {"folder": str(folder), "gib": round(folder_bytes(folder) / 2**30, 2)}


def prepare_encoder(arch: str, folder: Path, seq: int, batch: int, precision: str) -> dict:
    from transformers import BertTokenizerFast, RobertaConfig, RobertaModel

    from benchmarks.packed_glue import ARCHS

    model_dir, glue_dir = folder / "model", folder / "glue"
    BertTokenizerFast(vocab={token: i for i, token in enumerate(SPECIAL + WORDS)}).save_pretrained(model_dir)
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(**ARCHS[arch])).save_pretrained(model_dir)
    write_sst2(glue_dir / "SST-2", words=2 * seq)
    common = ["--model_name_or_path", str(model_dir), "--task_name", "sst2", "--glue_dir", str(glue_dir)]
    common += ["--max_seq_length", str(seq), "--per_device_train_batch_size", str(batch)]
    common += ["--per_device_eval_batch_size", str(batch), "--train_sampling_strategy", "random", "--seed", "0"]
    common += ["--lora_alpha", "16", "--max_steps", "2", *(["--bf16", "true"] if precision == "bf16" else [])]
    members = [[*common, "--lora_init", init, "--learning_rate", lr] for init, lr in (("A", "1e-4"), ("B", "1.5e-4"))]
    (folder / "pack.json").write_text(json.dumps({"runner": "run_glue.py", "members": members}, indent=1))
    return {"folder": str(folder), "gib": round(folder_bytes(folder) / 2**30, 2)}


def write_sst2(folder: Path, words: int, train: int = 64, dev: int = 16) -> None:
    """SST-2's TSV layout with sentences of `words` words, so every example is cut at the sequence length."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", train), ("dev", dev)):
        rows = ["sentence\tlabel"]
        for i in range(count):
            rows.append(" ".join(WORDS[(i * 7 + k * 3) % len(WORDS)] for k in range(words)) + f"\t{i % 2}")
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def probe_pack(pack: Path, gpu: str | None) -> dict:
    """Peaks of packs of 1 and 2 of `pack`, measured as `--pack auto` measures them, and the sizes that fit."""
    from benchmarks.targets import A10_GIB
    from lorakit.packing.probe import fit, probe_in_subprocess
    from lorakit.sweeps.autopack import device_kind

    gpu = None if gpu in (None, "none") else gpu
    one = probe_in_subprocess(pack, 1, gpu)
    two = probe_in_subprocess(pack, 2, gpu) if not one.get("out_of_memory") else {"out_of_memory": True}
    peaks = {k: r["peak_bytes"] for k, r in ((1, one), (2, two)) if r.get("peak_bytes") is not None}
    result = {"device_kind": device_kind(gpu), **{k: one.get(k) for k in ("measured_by", "device", "device_bytes")}}
    result["peaks"] = {str(k): v for k, v in peaks.items()}
    try:
        result["fits_a10"] = fit(peaks, A10_GIB * 2**30)[0]
        result["fits_device"] = fit(peaks, one["device_bytes"])[0]
    except (KeyError, ValueError) as err:  # no pack of 1, or no growth from 1 to 2
        result["fit_error"] = str(err)
    return result


def timed(command: str, args) -> dict:
    """One preparation step (`command`), timed; its result is printed as the step's JSON line."""
    start = time.perf_counter()
    if command == "prepare-decoder":
        result = prepare_decoder(args.arch, args.folder)
    else:
        result = prepare_encoder(args.arch, args.folder, args.seq, args.batch, args.precision)
    return {**result, "seconds": round(time.perf_counter() - start, 1)}
