"""One run of a task: prepare (nothing loaded), ready the run folder (resume or leave a finished run), load the base,
add LoRA with the init scheme, train with the records kept current, evaluate, save the adapter."""

import logging
from pathlib import Path

import torch
from transformers import set_seed

from lorakit.core.run_folder import prepare_run_folder, run_settings
from lorakit.dynamics.callback import Member, add_diagnostics
from lorakit.models.lora import add_lora, trainable_summary
from lorakit.tasks.base import Prepared, RunArguments, Task
from lorakit.training.command import run_command
from lorakit.training.records import RunMonitor, RunRecorder, outcome_recorded, resolved_config, train_and_finish
from lorakit.training.trainer import LoraTrainer

logger = logging.getLogger("lorakit.run")


def prepare_single_run(task: Task, argv: list[str]) -> Prepared | None:
    """`task.prepare`, then the run folder: resume an unfinished run there, or None when it holds a finished one."""
    prepared = task.prepare(argv)
    training = prepared.args.training
    finished = prepare_run_folder(training, run_settings(prepared.args.sections()))
    if finished:
        print(f"{training.output_dir} holds a finished run ({finished}); --overwrite_output_dir true trains it again")
        return None
    return prepared


def with_lora(task: Task, model, args: RunArguments):
    """`model` with LoRA and the init scheme of `args`, on the training device (a quantized base is already placed)."""
    model, init_record = add_lora(model, args.lora, args.training.init_spec(), task.peft_task_type)
    logger.info("%s; init %s", trainable_summary(model), init_record)
    if not task.is_quantized(args):
        model.to(args.training.device)
    return model, init_record


def run_config(task: Task, args: RunArguments, prepared: Prepared, model, init_record: dict) -> dict:
    """The run's resolved config: every setting, the model's path, the init record, the data's sizes, the settings
    a resumed attempt must share, the optimizer groups and the precision."""
    extras = {"model_path": prepared.model_path, "init": init_record, "data_sizes": task.data_record(prepared)}
    extras["settings"] = run_settings(args.sections())
    extras["world_size"] = args.training.world_size  # data-parallel processes: the global batch is this × the device's
    return resolved_config(args.sections(), {**extras, **args.training.training_record(model)})


def train_single_run(task: Task, prepared: Prepared) -> int:
    metric, higher_is_better = task.best_metric(prepared)
    recorder = RunRecorder.for_training(prepared.args.training, metric, higher_is_better)
    with outcome_recorded(recorder):
        return train_recorded(task, prepared, recorder)


def train_recorded(task: Task, prepared: Prepared, recorder: RunRecorder) -> int:
    args = prepared.args
    set_seed(args.training.seed)
    model, init_record = with_lora(task, task.load_model(prepared), args)
    recorder.write_config(run_config(task, args, prepared, model, init_record))
    before = task.evaluate_before(model, prepared)
    if before is not None:
        recorder.record("before", before)
        logger.info("before training: %s", before)
    monitor = RunMonitor(recorder, args.training.divergence_loss_threshold)
    evals = task.eval_datasets(prepared)
    trainer = LoraTrainer(
        model=model,
        args=args.training,
        train_dataset=task.train_dataset(prepared),
        eval_dataset=(evals if len(evals) > 1 else next(iter(evals.values()))) if evals else None,
        data_collator=task.collator(prepared),
        processing_class=prepared.tokenizer,
        compute_metrics=task.compute_metrics(prepared),
        callbacks=[*task.callbacks(prepared), monitor],
    )
    add_diagnostics(trainer, args.training, [Member(None, Path(args.training.output_dir))])
    final = train_and_finish(trainer, recorder, monitor, lambda: task.final_metrics(trainer, recorder, prepared))
    if final is not None:
        print(f"done: {task.summary(recorder.state, prepared)} -> {args.training.output_dir}")
    return 0


def main(task: Task, argv: list[str], name: str) -> int:
    """A single run of `task` from the command line `argv`; errors are one line prefixed with `name`."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    code = run_command(name, lambda: prepare_single_run(task, argv), lambda prepared: train_single_run(task, prepared))
    if code == 0:
        end_process_group()
    return code


def end_process_group() -> None:
    """After a run of several processes: each waits for the others (the main one writes the adapter and the records
    last), then takes the process group down. Left to the interpreter's exit, gloo's threads once aborted a process
    that had finished first (tests/test_sharded.py on a loaded machine)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
