"""A pack: K configurations of one task that differ only in learning rate, init scheme and LoRA+ ratio, trained
together on one frozen base (`lorakit.packing`), each leaving in its own folder what its single run would leave.

The data is read and checked once (every configuration shares it), the base is loaded once, each configuration gets
its single run's starting adapter and optimizer groups, and the task says how K adapters compute their losses on one
batch and how they are evaluated. Checkpoints go to the pack's own folder, and a killed pack resumes from there.
"""

import copy
from pathlib import Path

import torch
from transformers import set_seed

from lorakit.dynamics.callback import Member, add_diagnostics
from lorakit.packing.boards import MemberBoards
from lorakit.packing.probe import longest, probe_args
from lorakit.packing.results import PackResults, train_pack
from lorakit.packing.trainer import PackedTrainer, check_packable, initial_states, pack_for_training
from lorakit.runs.single import run_config, with_lora
from lorakit.tasks import as_task
from lorakit.tasks.base import Prepared, RunArguments, Task


def prepare_pack(task: Task, argvs: list[list[str]]) -> tuple[list[RunArguments], Prepared]:
    """The K configurations' arguments (checked: they may share a pack) and the first one's preparation (the data,
    tokenizer and model they share)."""
    prepared = task.prepare(argvs[0])
    arguments = [prepared.args, *(task.parse_to_run(argv) for argv in argvs[1:])]
    check_packable(arguments)
    return arguments, prepared


def load_pack(task: Task, arguments: list[RunArguments], prepared: Prepared) -> tuple:
    """The PEFT model as each single run builds it (not packed yet), and each configuration's starting adapter and
    init record."""
    set_seed(arguments[0].training.seed)  # as the single runs: a head's init comes from this seed
    model, _ = with_lora(task, task.load_model(prepared), arguments[0])
    states, records = initial_states(model, arguments)
    return model, states, records


def pack_trainer(task: Task, model, arguments, states, prepared: Prepared, pack_args, **kwargs) -> PackedTrainer:
    """`model` packed with `states`, in a PackedTrainer with `pack_args` (`kwargs`: datasets and hooks)."""
    packed, groups, loss_scaling = pack_for_training(model, arguments, states)
    wrapper = task.packed_model(packed, len(arguments), pack_args.divergence_loss_threshold, prepared)
    return PackedTrainer(
        model=wrapper, args=pack_args, data_collator=task.collator(prepared), processing_class=prepared.tokenizer,
        adapter_groups=groups, loss_scaling=loss_scaling, **kwargs,
    )  # fmt: skip


def probe_trainer(task: Task, argvs: list[list[str]], scratch: str) -> PackedTrainer:
    """A pack of `argvs` set to train a few steps on its longest examples (see `lorakit.packing.probe`)."""
    arguments, prepared = prepare_pack(task, argvs)
    model, states, _ = load_pack(task, arguments, prepared)
    args = probe_args(arguments[0].training, scratch)
    evals = list(task.eval_datasets(prepared).values())
    held_out = longest(torch.utils.data.ConcatDataset(evals), args.eval_batch_size) if evals else None
    train = longest(task.train_dataset(prepared), args.train_batch_size)
    return pack_trainer(task, model, arguments, states, prepared, args, train_dataset=train, eval_dataset=held_out)


def default_pack_dir(members: list[str]) -> str:
    first = Path(members[0])
    return str(first.parent / f"pack-{first.name}-k{len(members)}")


def run_pack(task: Task | str, argvs: list[list[str]], pack_dir: str | None = None) -> int:
    """Train `task`'s K configurations `argvs` as one pack (checkpoints in `pack_dir`, by default a folder beside the
    first configuration's); 0 when every configuration ended done or diverged."""
    task = as_task(task)
    arguments, prepared = prepare_pack(task, argvs)
    model, states, records = load_pack(task, arguments, prepared)
    configs = [run_config(task, args, prepared, model, rec) for args, rec in zip(arguments, records, strict=True)]
    pack_dir = pack_dir or default_pack_dir([args.training.output_dir for args in arguments])
    metric, higher_is_better = task.best_metric(prepared)
    results = PackResults(arguments, configs, pack_dir, metric, higher_is_better)
    before = task.evaluate_before(model, prepared)  # BA = 0: the base model's, the same for every configuration
    if before is not None:
        results.record("before", before)

    def evaluate(step: int, epoch: float | None) -> dict:
        rows = task.evaluate_pack(trainer, prepared)
        return results.add_evaluations({index: rows[index] for index in trainer.model.live}, step, epoch)

    pack_args = copy.copy(arguments[0].training)  # checkpoints go to the pack's own folder, beside its members'
    pack_args.output_dir = pack_dir
    evals = task.eval_datasets(prepared)
    trainer = pack_trainer(
        task, model, arguments, states, prepared, pack_args, train_dataset=task.train_dataset(prepared),
        eval_dataset=next(iter(evals.values()), None),  # the Trainer asks for one; `evaluate` scores them all
        on_divergence=results.on_divergence, evaluate_fn=evaluate,
    )  # fmt: skip
    members = [Member(k, Path(a.training.output_dir), f"diag/{k}/") for k, a in enumerate(arguments)]
    add_diagnostics(trainer, arguments[0].training, members)
    trainer.add_callback(MemberBoards([member.folder for member in members]))

    def final_metrics() -> dict[int, dict]:
        return task.final_pack_metrics(trainer, model, results, evaluate, prepared)

    train_pack(trainer, results, final_metrics, model, prepared.tokenizer, lambda state: task.summary(state, prepared))
    return 0
