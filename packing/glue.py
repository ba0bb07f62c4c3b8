"""Packed run_glue.py: K configurations of one sweep trained together on one frozen base.

The K configurations may differ in learning rate, init scheme and LoRA+ ratio (and their output directories); all
else must be equal, the seed included, so that every configuration sees the same data in the same order as its own
single run and starts from the same head. What each configuration is given and left is in `packing.trainer` and
`packing.results`.
"""

import copy
from pathlib import Path

import torch
from torch import nn
from transformers import DataCollatorWithPadding, set_seed

import run_glue
from finetune.glue_data import EncodedDataset
from finetune.metrics import predictions_from_logits, task_metrics
from finetune.modeling import add_lora, load_sequence_classifier, load_tokenizer
from finetune.results import resolved_config
from packing.probe import longest, probe_args
from packing.results import PackResults, evaluated_at, train_pack
from packing.trainer import PackedModel, PackedTrainer, check_packable, initial_states, pack_for_training


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """The loss transformers' sequence classifiers compute, for one slice."""
    if regression:
        return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


class PackedClassifier(PackedModel):
    """A packed sequence classifier: logits [K, batch, labels], and the K losses when labels are given."""

    def __init__(self, packed: nn.Module, k: int, regression: bool, threshold: float):
        super().__init__(packed, k, threshold)
        self.regression = regression

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        logits = self.packed(**self.repeated(inputs)).logits.view(self.k, len(input_ids), -1)
        if labels is None:
            return {"logits": logits}
        losses = torch.stack([per_example_loss(logits[i], labels, self.regression) for i in range(self.k)])
        return {"loss": self.training_loss(losses), "logits": logits}


def default_pack_dir(members: list[str]) -> str:
    first = Path(members[0])
    return str(first.parent / f"pack-{first.name}-k{len(members)}")


def prepare_pack(argvs: list[list[str]]) -> tuple:
    """The K configurations' arguments (checked: they may share a pack), the data and the model path."""
    prepared = [run_glue.prepare(argv) for argv in argvs]
    all_args = [args for args, _, _ in prepared]
    check_packable(all_args)
    _, data, model_path = prepared[0]
    return all_args, data, model_path


def load_pack(all_args: list[tuple], model_path: str) -> tuple:
    """The PEFT model as each single run builds it (not packed yet), each configuration's starting adapter and init
    record, and the tokenizer."""
    model_args, lora_args, data_args, train_args = all_args[0]
    set_seed(train_args.seed)  # as the single runs: the head's init comes from this seed
    tokenizer = load_tokenizer(model_path, model_args)
    model = load_sequence_classifier(model_path, data_args.task.num_labels, model_args, tokenizer.pad_token_id)
    model, _ = add_lora(model, lora_args, train_args.init_spec(), "SEQ_CLS")
    states, records = initial_states(model, all_args)
    return model, states, records, tokenizer


def pack_trainer(model, all_args: list[tuple], states: list[dict], tokenizer, pack_args, **kwargs) -> PackedTrainer:
    """`model` packed with `states`, in a PackedTrainer with `pack_args` (`kwargs`: datasets and hooks)."""
    packed, groups, loss_scaling = pack_for_training(model, all_args, states)
    task = all_args[0][2].task
    wrapper = PackedClassifier(packed, len(all_args), task.is_regression, pack_args.divergence_loss_threshold)
    collator = DataCollatorWithPadding(tokenizer)
    return PackedTrainer(
        model=wrapper, args=pack_args, data_collator=collator, processing_class=tokenizer, adapter_groups=groups,
        loss_scaling=loss_scaling, **kwargs,
    )  # fmt: skip


def probe_trainer(argvs: list[list[str]], scratch: str) -> PackedTrainer:
    """A pack of `argvs` set to train a few steps on its longest examples (see `packing.probe`)."""
    all_args, data, model_path = prepare_pack(argvs)
    model, states, _, tokenizer = load_pack(all_args, model_path)
    train_args, length = all_args[0][3], all_args[0][2].max_seq_length
    train = EncodedDataset(data.train, tokenizer, length)
    held_out = torch.utils.data.ConcatDataset([EncodedDataset(ex, tokenizer, length) for ex in data.evals.values()])
    args = probe_args(train_args, scratch)
    return pack_trainer(
        model, all_args, states, tokenizer, args, train_dataset=longest(train, args.train_batch_size),
        eval_dataset=longest(held_out, args.eval_batch_size),
    )  # fmt: skip


def run_packed(argvs: list[list[str]], pack_dir: str | None = None) -> int:
    """Train run_glue.py's K configurations `argvs` as one pack (checkpoints in `pack_dir`, by default a folder
    beside the first configuration's); 0 when every configuration ended done or diverged."""
    all_args, data, model_path = prepare_pack(argvs)
    model, states, records, tokenizer = load_pack(all_args, model_path)
    data_args, train_args = all_args[0][2], all_args[0][3]
    task = data_args.task
    data_record = {"source": data.source, "train": len(data.train), **{n: len(v) for n, v in data.evals.items()}}
    configs = []
    for args, record in zip(all_args, records, strict=True):
        sections = dict(zip(("model", "lora", "data", "training"), args, strict=True))
        extras = {"model_path": model_path, "init": record, "data_sizes": data_record}
        configs.append(resolved_config(sections, {**extras, **args[3].training_record(model)}))
    pack_dir = pack_dir or default_pack_dir([args[3].output_dir for args in all_args])
    results = PackResults(all_args, configs, pack_dir, task.primary_metric, higher_is_better=True)
    evals = {n: EncodedDataset(ex, tokenizer, data_args.max_seq_length, True) for n, ex in data.evals.items()}

    def evaluate(step: int, epoch: float | None) -> dict:
        rows = evaluate_pack(trainer, evals, task)
        return results.add_evaluations({index: rows[index] for index in trainer.model.live}, step, epoch)

    pack_args = copy.copy(train_args)  # checkpoints go to the pack's own folder, beside its members' run folders
    pack_args.output_dir = pack_dir
    trainer = pack_trainer(
        model, all_args, states, tokenizer, pack_args,
        train_dataset=EncodedDataset(data.train, tokenizer, data_args.max_seq_length),
        eval_dataset=next(iter(evals.values())),  # the Trainer asks for one; `evaluate_fn` scores them all
        on_divergence=results.on_divergence, evaluate_fn=evaluate,
    )  # fmt: skip

    def final_metrics() -> dict[int, dict]:  # the last evaluation, taken now unless it was taken at the last step
        last, live = trainer.state.global_step, trainer.model.live
        if not all(evaluated_at(results.recorders[index], last) for index in live):
            evaluate(last, trainer.state.epoch)
        return {index: results.recorders[index].state["evaluations"][-1] for index in live}

    train_pack(trainer, results, final_metrics, model, tokenizer)
    return 0


def evaluate_pack(trainer, evals: dict, task) -> list[list[dict]]:
    """Every adapter's metrics, one row per evaluation set, named as a single run's Trainer names them. The batches
    come from the Trainer's own evaluation loaders, as in a single run (whose random state they advance alike)."""
    wrapper = trainer.model
    wrapper.eval()
    results = [[] for _ in range(wrapper.k)]
    for name, dataset in evals.items():
        prefix = "eval_" if len(evals) == 1 else f"eval_{name}_"
        logits, labels, losses = [[] for _ in range(wrapper.k)], [], torch.zeros(wrapper.k, dtype=torch.float64)
        with torch.no_grad():
            for batch in trainer.get_eval_dataloader(dataset):
                out = wrapper(**{n: v for n, v in batch.items() if n != "labels"})["logits"]
                for index in range(wrapper.k):
                    logits[index].append(out[index].float().cpu())
                    loss = per_example_loss(out[index], batch["labels"], task.is_regression)
                    losses[index] += len(batch["labels"]) * float(loss)
                labels.append(batch["labels"].cpu())
        references = torch.cat(labels).numpy()
        for index in range(wrapper.k):
            predictions = predictions_from_logits(task, torch.cat(logits[index]).numpy())
            scores = task_metrics(task, predictions, references)
            row = {f"{prefix}loss": losses[index].item() / len(references)}
            results[index].append(row | {f"{prefix}{key}": value for key, value in scores.items()})
    wrapper.train()
    return results
