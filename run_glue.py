"""Finetune a sequence classifier with LoRA under Init[A] or Init[B], with or without LoRA+.

    python run_glue.py                                   # embedded default: MiniLM on movie reviews, CPU, minutes
    accelerate launch --config_file launch/cpu.yaml run_glue.py --lora_init B --loraplus_lr_ratio 16
    accelerate launch --config_file launch/single_gpu.yaml run_glue.py \\
        --config launch/roberta_large_glue.yaml --task_name sst2 --glue_dir ../shared/data/glue --lora_init A

The output directory gets run_config.json (every setting, the init record, LoRA+ groups, versions), metrics.json
(status and every evaluation) and the adapter in PEFT format (`PeftModel.from_pretrained` loads it).
"""

import logging
import sys

from transformers import DataCollatorWithPadding, set_seed

from finetune.arguments import (
    ConfigError,
    LoraArguments,
    ModelArguments,
    TrainArguments,
    check_combination,
    parse_args,
)
from finetune.embedded import FetchError
from finetune.glue_data import EncodedDataset, GlueDataArguments, load_task_data
from finetune.metrics import trainer_metrics_fn
from finetune.modeling import (
    add_lora,
    check_lora_shapes,
    load_config,
    load_sequence_classifier,
    load_tokenizer,
    quantization_config,
    resolve_model_path,
    trainable_summary,
)
from finetune.results import RunMonitor, RunRecorder, resolved_config, train_and_finish
from loraplus import LoraPlusTrainer

ARGUMENT_TYPES = (ModelArguments, LoraArguments, GlueDataArguments, TrainArguments)
logger = logging.getLogger("run_glue")


def prepare(argv: list[str]):
    """Parse the arguments, read the data and check the LoRA layout: everything that can fail before a model loads."""
    model_args, lora_args, data_args, train_args = parse_args(ARGUMENT_TYPES, argv)
    check_combination(lora_args, train_args)
    quantization_config(model_args)
    data = load_task_data(data_args)
    model_path = resolve_model_path(model_args.model_name_or_path)
    check_lora_shapes(load_config(model_path, model_args, num_labels=data_args.task.num_labels), lora_args)
    train_args.fill_default_output_dir(model_args.model_name_or_path, data_args.task_name)
    return (model_args, lora_args, data_args, train_args), data, model_path


def final_evaluation(trainer, recorder: RunRecorder) -> dict:
    """The last evaluation if it was taken at the last step, else a fresh one."""
    evaluations = recorder.state["evaluations"]
    if evaluations and evaluations[-1]["step"] == trainer.state.global_step:
        return evaluations[-1]
    return trainer.evaluate()


def train_and_record(args: tuple, data, model_path: str) -> int:
    model_args, lora_args, data_args, train_args = args
    task = data_args.task
    set_seed(train_args.seed)
    tokenizer = load_tokenizer(model_path, model_args)
    model = load_sequence_classifier(model_path, task.num_labels, model_args, tokenizer.pad_token_id)
    model, init_record = add_lora(model, lora_args, train_args.init_spec(), "SEQ_CLS")
    logger.info("%s; init %s", trainable_summary(model), init_record)

    recorder = RunRecorder.for_training(train_args, task.primary_metric)
    data_record = {"source": data.source, "train": len(data.train), **{k: len(v) for k, v in data.evals.items()}}
    sections = {"model": model_args, "lora": lora_args, "data": data_args, "training": train_args}
    extras = {"model_path": model_path, "init": init_record, "data_sizes": data_record}
    recorder.write_config(resolved_config(sections, {**extras, **train_args.training_record(model)}))

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
    try:
        args, data, model_path = prepare(sys.argv[1:] if argv is None else argv)
    except (ConfigError, FetchError) as err:
        print(f"run_glue.py: error: {err}", file=sys.stderr)
        return 2
    return train_and_record(args, data, model_path)


if __name__ == "__main__":
    sys.exit(main())
