"""Sweep throughput of packed QLoRA training (issue 6, point 4): tokens/s of configurations trained, for one stock
QLoRA run (transformers + PEFT + bitsandbytes) at batch 1, our single run at batch 1, and packs of K configurations
(batch 1 each) on one frozen 4-bit base, with peak GPU memory against an A10's 24 GB.

    python -m benchmarks.packed_llm --document docs/benchmarks.md          # random Llama-7b in 4-bit NF4, one GPU
    python -m benchmarks.packed_llm --arch tiny --device cpu --quantization none --packs 1 2 --steps 4 --warmup 1

Stock and ours are `benchmarks.llm_training`'s cases. Packed: the lm task's `PackedCausalLM`
(`lorakit.tasks.lm.packed`) and `PackedTrainer` over `load_causal_lm` and `add_lora`, as `python -m lorakit pack`
builds them, K configurations of different learning rates and init schemes, non-reentrant gradient checkpointing as in
launch/llama7b_4bit_gsm8k.yaml. Each case runs in its own process; tokens/s counts every configuration's tokens over
the steps after `--warmup`. A sweep run one configuration after another runs at the single-run rate, so the packed rate
over the stock rate is its speed-up."""

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (
    Interim,
    StepClock,
    add_run_arguments,
    append_section,
    measure_in_process,
    peak_memory,
    profile_steps,
)
from benchmarks.llm_training import ARCHS, run_ours, run_stock, save_random_checkpoint
from benchmarks.targets import A10_GIB, PACK_TARGETS

TARGET = next(least for case, least, _ in PACK_TARGETS["qlora"] if case == "pack8")


def run_pack(path: str, k: int, args, on_timed=None) -> tuple[float, dict]:
    from lorakit.models.arguments import ModelArguments
    from lorakit.models.loading import load_causal_lm
    from lorakit.models.lora import add_lora
    from lorakit.packing.trainer import PackedTrainer, initial_states, pack_for_training
    from lorakit.tasks.base import RunArguments
    from lorakit.tasks.lm.arguments import LmLoraArguments
    from lorakit.tasks.lm.encoding import BlockDataset, PadCollator
    from lorakit.tasks.lm.packed import PackedCausalLM

    quantized = args.quantization == "4bit"
    model_args = ModelArguments(model_name_or_path=path, torch_dtype="bfloat16", load_in_4bit=quantized)
    configs = [
        RunArguments(model=None, lora=None, data=None, training=train_arguments(args, 1e-4 * 2**i, "AB"[i % 2]))
        for i in range(k)
    ]
    model = load_causal_lm(path, model_args, args.checkpointing)
    model, _ = add_lora(model, LmLoraArguments(), configs[0].training.init_spec(), "CAUSAL_LM")
    if not quantized:
        model.to(args.device)
    states, _ = initial_states(model, configs)
    packed, groups, loss_scaling = pack_for_training(model, configs, states)
    timer = StepClock(args.warmup, args.steps, args.device, profile_steps(args), on_timed)
    blocks = torch.randint(0, 32000, (args.steps + profile_steps(args), args.seq))
    trainer = PackedTrainer(
        model=PackedCausalLM(packed, k, threshold=1e9), args=configs[0].training, callbacks=[timer],
        train_dataset=BlockDataset(blocks), data_collator=PadCollator(0),
        adapter_groups=groups, on_divergence=lambda *a: None, evaluate_fn=lambda *a: {}, loss_scaling=loss_scaling,
    )  # fmt: skip
    trainer.train()
    return k * args.seq * (args.steps - args.warmup) / timer.seconds, timer.figures


def train_arguments(args, learning_rate: float, scheme: str):
    from lorakit.tasks.lm.arguments import LmTrainArguments

    return LmTrainArguments(
        output_dir=tempfile.mkdtemp(), max_steps=args.steps + profile_steps(args), per_device_train_batch_size=1,
        learning_rate=learning_rate, lora_init=scheme, gradient_checkpointing=args.checkpointing,
        bf16=args.device == "cuda", use_cpu=args.device == "cpu", logging_steps=args.steps, save_strategy="no",
        report_to=[], warmup_steps=0, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip


def measure(case: str, path: str, args) -> dict:
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    quantized = args.quantization == "4bit"
    timing = (args.seq, args.steps, args.warmup, args.device, profile_steps(args))
    k = int(case.removeprefix("pack")) if case.startswith("pack") else 1
    units = k * args.seq * (args.steps - args.warmup)
    interim = Interim({"case": case, "configurations": k}, "tokens_per_s", units, args.device)
    if case in ("stock", "ours"):
        runner = run_stock if case == "stock" else run_ours
        tokens_per_s, profiled = runner(path, quantized, 1, args.checkpointing, *timing, interim)
    else:
        tokens_per_s, profiled = run_pack(path, k, args, interim)
    row = {"case": case, "configurations": k, "tokens_per_s": round(tokens_per_s)}
    return {**row, **peak_memory(args.device), **profiled}


def table(rows: list[dict], seq: int) -> str:
    stock = next(r["tokens_per_s"] for r in rows if r["case"] == "stock")
    lines = [
        "| case | configurations × 1 × seq | tokens/s | × stock | peak GiB | fits an A10 |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        fits = "—" if math.isnan(row["peak_gib"]) else ("yes" if row["peak_gib"] <= A10_GIB else "NO")
        ratio = row["tokens_per_s"] / stock
        mark = f" ({'meets' if ratio >= TARGET else 'BELOW'} ≥ {TARGET:g}×)" if row["case"] == "pack8" else ""
        lines.append(
            f"| {row['case']} | {row['configurations']} × 1 × {seq} | {row['tokens_per_s']:,} | {ratio:.2f}{mark} "
            f"| {row['peak_gib']} | {fits} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="llama-7b", choices=list(ARCHS), help="random weights of this shape")
    parser.add_argument("--quantization", default="4bit", choices=["4bit", "none"], help="none: a bf16 base")
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 8], help="pack sizes K to measure")
    parser.add_argument("--seq", type=int, default=512, help="tokens per sequence")
    parser.add_argument("--no_checkpointing", dest="checkpointing", action="store_false", help="no checkpointing")
    add_run_arguments(parser, steps=16, warmup=4)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.path, args)), flush=True)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible: run on a GPU machine, or --device cpu --quantization none")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / args.arch)
        print(f"saving a random {args.arch} checkpoint …", file=sys.stderr, flush=True)
        save_random_checkpoint(args.arch, Path(path))
        for case in ["stock", "ours", *(f"pack{k}" for k in args.packs)]:
            rows.append(measure_in_process("benchmarks.packed_llm", case, ["--path", path, *sys.argv[1:]]))
    print(table(rows, args.seq))
    if args.document:
        body = f"Random {args.arch} weights ({args.quantization}), sequence {args.seq}, LoRA r = 8 on the seven "
        body += f"projections, batch 1 per configuration; {args.steps} steps, the first {args.warmup} not timed.\n\n"
        append_section(
            args.document, "Packed QLoRA sweeps", "benchmarks.packed_llm", args.device, body + table(rows, args.seq)
        )


if __name__ == "__main__":
    main()
