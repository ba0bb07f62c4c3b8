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


def run_packed(argvs: list[list[str]], pack_dir: str | None = None) -> int:
    """Train run_glue.py's K configurations `argvs` as one pack (checkpoints in `pack_dir`, by default a folder
    beside the first configuration's); 0 when every configuration ended done or diverged."""
    prepared = [run_glue.prepare(argv) for argv in argvs]
    all_args = [args for args, _, _ in prepared]
    check_packable(all_args)
    (model_args, lora_args, data_args, train_args), data, model_path = prepared[0]
    task, k = data_args.task, len(prepared)
    set_seed(train_args.seed)  # as the single runs: the head's init comes from this seed
    tokenizer = load_tokenizer(model_path, model_args)
    model = load_sequence_classifier(model_path, task.num_labels, model_args, tokenizer.pad_token_id)
    model, _ = add_lora(model, lora_args, train_args.init_spec(), "SEQ_CLS")
    states, records = initial_states(model, all_args)
    data_record = {"source": data.source, "train": len(data.train), **{n: len(v) for n, v in data.evals.items()}}
    configs = []
    for args, record in zip(all_args, records, strict=True):
        sections = dict(zip(("model", "lora", "data", "training"), args, strict=True))
        extras = {"model_path": model_path, "init": record, "data_sizes": data_record}
        configs.append(resolved_config(sections, {**extras, **args[3].training_record(model)}))
    pack_dir = pack_dir or default_pack_dir([args[3].output_dir for args in all_args])
    results = PackResults(all_args, configs, pack_dir, task.primary_metric, higher_is_better=True)

    packed, groups, loss_scaling = pack_for_training(model, all_args, states)
    wrapper = PackedClassifier(packed, k, task.is_regression, train_args.divergence_loss_threshold)
    evals = {n: EncodedDataset(ex, tokenizer, data_args.max_seq_length, True) for n, ex in data.evals.items()}

    def evaluate(step: int, epoch: float | None) -> dict:
        rows = evaluate_pack(trainer, evals, task)
        return results.add_evaluations({index: rows[index] for index in wrapper.live}, step, epoch)

    pack_args = copy.copy(train_args)  # checkpoints go to the pack's own folder, beside its members' run folders
    pack_args.output_dir = pack_dir
    trainer = PackedTrainer(
        model=wrapper,
        args=pack_args,
        train_dataset=EncodedDataset(data.train, tokenizer, data_args.max_seq_length),
        eval_dataset=next(iter(evals.values())),  # the Trainer asks for one; `evaluate_fn` scores them all
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        adapter_groups=groups,
        on_divergence=results.on_divergence,
        evaluate_fn=evaluate,
        loss_scaling=loss_scaling,
    )

    def final_metrics() -> dict[int, dict]:  # the last evaluation, taken now unless it was taken at the last step
        last = trainer.state.global_step
        if not all(evaluated_at(results.recorders[index], last) for index in wrapper.live):
            evaluate(last, trainer.state.epoch)
        return {index: results.recorders[index].state["evaluations"][-1] for index in wrapper.live}

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
