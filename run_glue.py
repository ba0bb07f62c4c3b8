"""Finetune a sequence classifier with LoRA under Init[A] or Init[B], with or without LoRA+.

    python run_glue.py                                   # embedded default: MiniLM on movie reviews, CPU, minutes
    accelerate launch --config_file launch/cpu.yaml run_glue.py --lora_init B --loraplus_lr_ratio 16
    accelerate launch --config_file launch/single_gpu.yaml run_glue.py \\
        --config launch/roberta_large_glue.yaml --task_name sst2 --glue_dir ../shared/data/glue --lora_init A

The output directory gets run_config.json (every setting, the init record, LoRA+ groups, versions), metrics.json
(status, every evaluation, every attempt) and the adapter in PEFT format (`PeftModel.from_pretrained` loads it).
Running the same command again resumes an unfinished run from its newest complete checkpoint.
"""

import logging
import sys

from transformers import DataCollatorWithPadding, set_seed

from finetune.arguments import (
    LoraArguments,
    ModelArguments,
    TrainArguments,
    check_best_metric,
    check_combination,
    check_packages,
    parse_args,
)
from finetune.command import run_command
from finetune.glue_data import EncodedDataset, GlueDataArguments, load_task_data, longest_encoding
from finetune.metrics import trainer_metrics_fn
from finetune.modeling import (
    add_lora,
    check_context,
    check_lora_shapes,
    context_length,
    load_config,
    load_sequence_classifier,
    load_tokenizer,
    quantization_config,
    resolve_model_path,
    trainable_summary,
)
from finetune.results import RunMonitor, RunRecorder, outcome_recorded, resolved_config, train_and_finish
from finetune.run_folder import prepare_run_folder, run_settings
from loraplus import LoraPlusTrainer

ARGUMENT_TYPES = (ModelArguments, LoraArguments, GlueDataArguments, TrainArguments)
logger = logging.getLogger("run_glue")


def prepare(argv: list[str]):
    """Parse the arguments, read the data, check the LoRA layout and lengths against the model's config and
    tokenizer: everything that can fail before a model loads."""
    model_args, lora_args, data_args, train_args = parse_args(ARGUMENT_TYPES, argv)
    check_combination(lora_args, train_args)
    quantization_config(model_args)
    check_packages(train_args)
    data = load_task_data(data_args)
    model_path = resolve_model_path(model_args.model_name_or_path)
    config = load_config(model_path, model_args, num_labels=data_args.task.num_labels)
    check_lora_shapes(config, lora_args)
    tokenizer = load_tokenizer(model_path, model_args)
    if data_args.max_seq_length > (context_length(config) or data_args.max_seq_length):  # only if an example is
        longest = longest_encoding(data, tokenizer, data_args.max_seq_length)  # that long does it matter
        check_context(config, {f"max_seq_length (examples of {longest} tokens)": longest})
    check_best_metric(train_args, evaluated_metrics(data_args.task, list(data.evals)))
    train_args.fill_default_output_dir(model_args.model_name_or_path, data_args.task_name)
    return (model_args, lora_args, data_args, train_args), data, model_path


def evaluated_metrics(task, eval_sets: list[str]) -> list[str]:
    """The metric names an evaluation reports (without eval_): per set when there are several, as the Trainer names
    them."""
    names = ["loss", *task.metrics]
    return names if len(eval_sets) == 1 else [f"{s}_{n}" for s in eval_sets for n in names]


def prepare_single_run(argv: list[str]):
    """`prepare`, then the run folder: resume an unfinished run there, or None when it holds a finished one."""
    args, data, model_path = prepare(argv)
    train_args = args[3]
    finished = prepare_run_folder(train_args, run_settings(sections_of(args)))
    if finished:
        print(
            f"{train_args.output_dir} holds a finished run ({finished}); --overwrite_output_dir true trains it again"
        )
        return None
    return args, data, model_path


def sections_of(args: tuple) -> dict:
    return dict(zip(("model", "lora", "data", "training"), args, strict=True))


def final_evaluation(trainer, recorder: RunRecorder) -> dict:
    """The last evaluation if it was taken at the last step, else a fresh one."""
    evaluations = recorder.state["evaluations"]
    if evaluations and evaluations[-1]["step"] == trainer.state.global_step:
        return evaluations[-1]
    return trainer.evaluate()


def train_and_record(prepared: tuple) -> int:
    args, data, model_path = prepared
    model_args, lora_args, data_args, train_args = args
    task = data_args.task
    recorder = RunRecorder.for_training(train_args, task.primary_metric)
    with outcome_recorded(recorder):
        return train_recorded(args, data, model_path, recorder)


def train_recorded(args: tuple, data, model_path: str, recorder: RunRecorder) -> int:
    model_args, lora_args, data_args, train_args = args
    task = data_args.task
    set_seed(train_args.seed)
    tokenizer = load_tokenizer(model_path, model_args)
    model = load_sequence_classifier(model_path, task.num_labels, model_args, tokenizer.pad_token_id)
    model, init_record = add_lora(model, lora_args, train_args.init_spec(), "SEQ_CLS")
    logger.info("%s; init %s", trainable_summary(model), init_record)

    data_record = {"source": data.source, "train": len(data.train), **{k: len(v) for k, v in data.evals.items()}}
    extras = {
        "model_path": model_path,
        "init": init_record,
        "data_sizes": data_record,
        "settings": run_settings(sections_of(args)),
    }
    recorder.write_config(resolved_config(sections_of(args), {**extras, **train_args.training_record(model)}))

    evals = {name: EncodedDataset(ex, tokenizer, data_args.max_seq_length, True) for name, ex in data.evals.items()}
    monitor = RunMonitor(recorder, train_args.divergence_loss_threshold)
    trainer = LoraPlusTrainer(
        model=model,
        args=train_args,
        train_dataset=EncodedDataset(data.train, tokenizer, data_args.max_seq_length),
        eval_dataset=evals if len(evals) > 1 else next(iter(evals.values())),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=trainer_metrics_fn(task),
        callbacks=[monitor],
    )
    final = train_and_finish(trainer, recorder, monitor, lambda: final_evaluation(trainer, recorder))
    if final is None:
        return 0
    scores = ", ".join(f"{k}={v:.4f}" for k, v in final.items() if k.startswith("eval_") and k.endswith(task.metrics))
    print(f"done: {scores} -> {train_args.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    argv = sys.argv[1:] if argv is None else argv
    return run_command("run_glue.py", lambda: prepare_single_run(argv), train_and_record)


if __name__ == "__main__":
    sys.exit(main())
