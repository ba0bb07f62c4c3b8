"""Finetune a causal LM with LoRA under Init[A] or Init[B], with or without LoRA+, optionally on a 4/8-bit base.

    python run_llm.py                     # embedded default: SmolLM2-135M on Shakespeare, CPU, a few minutes
    accelerate launch --config_file launch/a10_bf16.yaml run_llm.py --config launch/tinyllama_wikitext2.yaml
    accelerate launch --config_file launch/a10_bf16.yaml run_llm.py --config launch/llama7b_4bit_gsm8k.yaml

Tasks: shakespeare (embedded), text (a folder of .txt), wikitext2 (perplexity on test), gsm8k (exact match of the
final number under greedy generation), instruct (prompt/response JSONL, scored on MMLU by answer-letter likelihood).
Every metric is measured before and after training on the same examples. The output directory gets run_config.json,
metrics.json (status, ``before``, ``final``, evaluations, attempts) and the adapter in PEFT format. Running the same
command again resumes an unfinished run from its newest complete checkpoint.
"""

import logging
import sys

from transformers import AutoModelForCausalLM, set_seed

from finetune.arguments import check_best_metric, check_combination, check_packages, parse_args
from finetune.command import run_command
from finetune.errors import ConfigError
from finetune.lm_arguments import LlmLoraArguments, LlmModelArguments, LlmTrainArguments
from finetune.lm_data import LmDataArguments, load_lm_data
from finetune.lm_encoding import encode_task
from finetune.lm_eval import PerplexityCallback, evaluate_task
from finetune.modeling import (
    add_lora,
    check_context,
    check_lora_shapes,
    load_causal_lm,
    load_config,
    load_tokenizer,
    quantization_config,
    resolve_model_path,
    trainable_summary,
)
from finetune.results import RunMonitor, RunRecorder, outcome_recorded, resolved_config, train_and_finish
from finetune.run_folder import prepare_run_folder, run_settings
from loraplus import LoraPlusTrainer

ARGUMENT_TYPES = (LlmModelArguments, LlmLoraArguments, LmDataArguments, LlmTrainArguments)
logger = logging.getLogger("run_llm")


def parse(argv: list[str]) -> tuple:
    """The arguments, checked against each other (no file is read yet), with the output directory filled in."""
    model_args, lora_args, data_args, train_args = parse_args(ARGUMENT_TYPES, argv)
    check_combination(lora_args, train_args)
    quantization_config(model_args)
    check_packages(train_args)
    train_args.fill_default_output_dir(model_args.model_name_or_path, data_args.task_name)
    return model_args, lora_args, data_args, train_args


def prepare(argv: list[str]):
    """Parse the arguments, read the data, check lengths and the LoRA layout against the model's config, tokenize:
    all that can fail before a model loads."""
    model_args, lora_args, data_args, train_args = parse(argv)
    data = load_lm_data(data_args)
    model_path = resolve_model_path(model_args.model_name_or_path)
    config = load_config(model_path, model_args)
    length = "block_size" if data_args.is_lm else "max_seq_length"
    check_context(config, {length: getattr(data_args, length)})
    check_lora_shapes(config, lora_args, AutoModelForCausalLM)
    tokenizer = load_tokenizer(model_path, model_args)
    encoded = encode_task(data, tokenizer, data_args)
    check_best_metric(train_args, ["loss", "perplexity"])
    if train_args.eval_strategy != "no" and encoded.heldout is None:
        raise ConfigError(
            f"eval_strategy: task {data_args.task_name} has no held-out text to evaluate during training"
        )
    return (model_args, lora_args, data_args, train_args), data, encoded, tokenizer, model_path


def prepare_single_run(argv: list[str]):
    """`prepare`, then the run folder: resume an unfinished run there, or None when it holds a finished one."""
    prepared = prepare(argv)
    train_args = prepared[0][3]
    finished = prepare_run_folder(train_args, run_settings(sections_of(prepared[0])))
    if finished:
        print(
            f"{train_args.output_dir} holds a finished run ({finished}); --overwrite_output_dir true trains it again"
        )
        return None
    return prepared


def sections_of(args: tuple) -> dict:
    return dict(zip(("model", "lora", "data", "training"), args, strict=True))


def run_record(args: tuple, data, encoded, model, model_path: str, init_record: dict) -> dict:
    model_args, lora_args, data_args, train_args = args
    sizes = {"source": data.source, "train": len(encoded.train)}
    sizes |= {"heldout": len(encoded.heldout or []), "gsm8k": len(data.gsm8k), "mmlu": len(data.mmlu)}
    extras = {
        "model_path": model_path,
        "init": init_record,
        "data_sizes": sizes,
        "settings": run_settings(sections_of(args)),
    }
    return resolved_config(sections_of(args), {**extras, **train_args.training_record(model)})


def summary_line(before: dict, after: dict) -> str:
    shown = [k for k in ("perplexity", "gsm8k_accuracy", "mmlu_accuracy") if k in after]
    return ", ".join(f"{k} {before[k]:.4g} -> {after[k]:.4g}" for k in shown)


def train_and_record(prepared: tuple) -> int:
    args = prepared[0]
    recorder = RunRecorder.for_training(args[3], "loss", greater_is_better=False)
    with outcome_recorded(recorder):
        return train_recorded(*prepared, recorder)


def train_recorded(args: tuple, data, encoded, tokenizer, model_path: str, recorder: RunRecorder) -> int:
    model_args, lora_args, data_args, train_args = args
    set_seed(train_args.seed)
    model = load_causal_lm(model_path, model_args, train_args.gradient_checkpointing)
    model, init_record = add_lora(model, lora_args, train_args.init_spec(), "CAUSAL_LM")
    logger.info("%s; init %s", trainable_summary(model), init_record)
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        model.to(train_args.device)

    recorder.write_config(run_record(args, data, encoded, model, model_path, init_record))
    batch = train_args.per_device_eval_batch_size
    task = (encoded, data, data_args)
    before = evaluate_task(model, tokenizer, *task, batch)
    recorder.record("before", before)
    logger.info("before training: %s", before)

    monitor = RunMonitor(recorder, train_args.divergence_loss_threshold)
    trainer = LoraPlusTrainer(
        model=model,
        args=train_args,
        train_dataset=encoded.train,
        eval_dataset=encoded.heldout,
        data_collator=encoded.collate,
        processing_class=tokenizer,
        callbacks=[PerplexityCallback(), monitor],
    )
    after = train_and_finish(trainer, recorder, monitor, lambda: evaluate_task(model, tokenizer, *task, batch))
    if after is None:
        return 0
    print(f"done: {summary_line(before, after)} -> {train_args.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    return run_command("run_llm.py", lambda: prepare_single_run(argv), train_and_record)


if __name__ == "__main__":
    sys.exit(main())
