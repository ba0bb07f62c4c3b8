"""Sweep throughput of packed LoRA training (issue 6): samples/s of configurations trained, for one stock HF Trainer +
PEFT run, our single run, and packs of K configurations on one frozen base, on random inputs.

    python -m benchmarks.packed_glue --document docs/benchmarks.md                     # RoBERTa-large, one GPU
    python -m benchmarks.packed_glue --arch minilm --device cpu --packs 1 4 --steps 6  # CPU, the embedded MiniLM
    python -m benchmarks.packed_glue --compile --document docs/benchmarks.md           # ours and packs compiled

Stock: `get_peft_model` (LoRA r = 8 on query/value) and a plain `transformers.Trainer`, as PEFT's docs show it. Ours:
`lorakit.models.lora.add_lora` and `LoraTrainer`, as run_glue.py calls them. Packed: the glue task's `PackedClassifier`
(`lorakit.tasks.classification`) and `PackedTrainer`, K configurations of different learning rates and init schemes.
Every case trains `--batch` samples per configuration per step, in its own process; samples/s counts every
configuration's samples over the steps after `--warmup`. A sweep of N configurations run one after another runs at the
single-run rate, so the packed rate over the stock rate is the sweep's speed-up. Every case runs at one `--precision`
(bf16 autocast on a GPU by default, the packed sweep recipe's; fp32 on a CPU), with TF32 on for any fp32 matmul on a
GPU, stock included, so no case gets tensor cores the others lack. With `--compile`, ours and the packs train under
`--torch_compile true` (inductor; compiling happens in the first step, which `--warmup` leaves out); stock stays the
uncompiled baseline."""

import argparse
import json
import sys
import tempfile

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

ROBERTA_LARGE = dict(
    vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
)  # fmt: skip
ARCHS = {  # random weights of these shapes; "minilm" is the embedded encoder with its real weights
    "roberta-large": ROBERTA_LARGE,
    "tiny": {
        **ROBERTA_LARGE,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
    },
}


def build_model(arch: str):
    from transformers import AutoModelForSequenceClassification, RobertaConfig

    if arch in ARCHS:
        return AutoModelForSequenceClassification.from_config(RobertaConfig(**ARCHS[arch], num_labels=2))
    from lorakit.models.embedded import embedded_encoder_dir

    return AutoModelForSequenceClassification.from_pretrained(embedded_encoder_dir(), num_labels=2)


class RandomExamples(torch.utils.data.Dataset):
    def __init__(self, count: int, seq: int, vocab: int):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, vocab, (count, seq), generator=generator)
        self.labels = torch.randint(0, 2, (count,), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def training_args(cls, args, batch: int, **extra):
    """The Trainer's settings of every case: the timed steps and the profiled ones after them, nothing saved, at the
    run's precision (TF32 on for every case on a GPU)."""
    return cls(
        output_dir=tempfile.mkdtemp(), max_steps=args.steps + profile_steps(args), per_device_train_batch_size=batch,
        learning_rate=1e-4, bf16=args.precision == "bf16", tf32=True if args.device == "cuda" else None,
        logging_steps=args.steps, save_strategy="no", report_to=[], warmup_steps=0, eval_strategy="no",
        use_cpu=args.device == "cpu", disable_tqdm=True, **extra,
    )  # fmt: skip


def run_case(case: str, args) -> tuple[float, dict]:
    """Samples/s of configurations trained in `case` (stock, ours, or packK), and the profiled steps' figures."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from init_schemes import InitSpec
    from lorakit.models.arguments import LoraArguments
    from lorakit.models.lora import add_lora
    from lorakit.training.arguments import TrainArguments
    from lorakit.training.trainer import LoraTrainer

    model = build_model(args.arch)
    data = RandomExamples((args.steps + profile_steps(args)) * args.batch, args.seq, model.config.vocab_size)
    configurations = int(case.removeprefix("pack")) if case.startswith("pack") else 1
    units = configurations * args.batch * (args.steps - args.warmup)
    interim = Interim(
        {"case": case, "batch": args.batch, "precision": args.precision}, "samples_per_s", units, args.device
    )
    timer = StepClock(args.warmup, args.steps, args.device, profile_steps(args), on_timed=interim)
    lora = LoraArguments(lora_r=8, lora_alpha=16, lora_dropout=0.1, lora_target_modules=["query", "value"])
    if case == "stock":
        config = LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"], task_type="SEQ_CLS"
        )
        trainer = Trainer(
            model=get_peft_model(model, config), args=training_args(TrainingArguments, args, args.batch),
            train_dataset=data, callbacks=[timer],
        )  # fmt: skip
    elif case == "ours":
        peft_model, _ = add_lora(model, lora, InitSpec("A", seed=0), "SEQ_CLS")
        train_args = training_args(
            TrainArguments, args, args.batch, train_sampling_strategy="random", torch_compile=args.compile
        )
        trainer = LoraTrainer(model=peft_model, args=train_args, train_dataset=data, callbacks=[timer])
    else:
        trainer = packed_trainer(model, lora, configurations, data, args, timer)
    trainer.train()
    return units / timer.seconds, timer.figures


def packed_trainer(model, lora, k: int, data, args, callback):
    from init_schemes import InitSpec
    from lorakit.models.lora import add_lora
    from lorakit.packing.trainer import PackedTrainer, initial_states, pack_for_training
    from lorakit.tasks.base import RunArguments
    from lorakit.tasks.classification import PackedClassifier
    from lorakit.training.arguments import TrainArguments

    peft_model, _ = add_lora(model, lora, InitSpec("A", seed=0), "SEQ_CLS")
    configs = [
        RunArguments(model=None, lora=None, data=None, training=TrainArguments(**vars_of(args, i))) for i in range(k)
    ]
    states, _ = initial_states(peft_model, configs)
    packed, groups, loss_scaling = pack_for_training(peft_model, configs, states)
    return PackedTrainer(
        model=PackedClassifier(packed, k, regression=False, threshold=100.0), args=configs[0].training,
        train_dataset=data, callbacks=[callback], adapter_groups=groups, on_divergence=lambda *a: None,
        evaluate_fn=lambda *a: {}, loss_scaling=loss_scaling,
    )  # fmt: skip


def vars_of(args, index: int) -> dict:
    """Configuration `index` of a pack: its own learning rate and init scheme, the rest shared."""
    base = training_args(dict, args, args.batch, train_sampling_strategy="random", torch_compile=args.compile)
    return {**base, "learning_rate": 1e-4 * 1.5**index, "lora_init": "AB"[index % 2]}


def measure(case: str, args) -> dict:
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    samples_per_s, profiled = run_case(case, args)
    row = {"case": case, "batch": args.batch, "precision": args.precision, "samples_per_s": round(samples_per_s, 1)}
    return {**row, **peak_memory(args.device), **profiled}


def table(rows: list[dict]) -> str:
    stock = next(r["samples_per_s"] for r in rows if r["case"] == "stock")
    lines = ["| case | configurations × batch | samples/s | × stock | peak GiB |", "|---|---|---|---|---|"]
    for row in rows:
        k = int(row["case"].removeprefix("pack")) if row["case"].startswith("pack") else 1
        ratio = row["samples_per_s"] / stock
        lines.append(
            f"| {row['case']} | {k} × {row['batch']} | {row['samples_per_s']:,} | {ratio:.2f} | {row['peak_gib']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="roberta-large", choices=[*ARCHS, "minilm"], help="tiny: a smoke run")
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 4, 11, 22], help="pack sizes K to measure")
    parser.add_argument("--batch", type=int, default=4, help="samples per configuration per step")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sample")
    parser.add_argument("--compile", action="store_true", help="ours and the packs under torch.compile")
    parser.add_argument("--precision", choices=["bf16", "fp32"], help="every case's (default: bf16 on a GPU)")
    add_run_arguments(parser, steps=30, warmup=5)
    args = parser.parse_args()
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    if args.one:
        print(json.dumps(measure(args.one, args)), flush=True)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU visible: run on a GPU machine, or --device cpu")
    rows = []
    for case in ["stock", "ours", *(f"pack{k}" for k in args.packs)]:
        rows.append(measure_in_process("benchmarks.packed_glue", case, sys.argv[1:]))
    print(table(rows))
    if args.document:
        body = f"{args.arch} in {args.precision}, sequence {args.seq}, LoRA r = 8 on query/value; {args.steps} steps, "
        body += "the first "
        compiled = "; ours and the packs under torch.compile" if args.compile else ""
        body += f"{args.warmup} not timed{compiled}.\n\n{table(rows)}"
        append_section(args.document, "Packed sweeps", "benchmarks.packed_glue", args.device, body)


if __name__ == "__main__":
    main()
