"""Text classification and regression on a sequence classifier: everything such a task shares, whatever its data.

A subclass says what its labels are (`label_space`: a `lorakit.tasks.metrics.LabelSpace`, such as a GLUE task's
`GlueTask`) and reads its data (`read_data` → `TaskData`); its data arguments carry ``max_seq_length``. The rest is
here: the checks before any model loads, the classifier, the tokenized datasets, the Trainer's metrics, and, for packs,
the packed classifier and its evaluation (each adapter's loss and metrics, named as a single run's Trainer names them).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import DataCollatorWithPadding

from lorakit.models.loading import (
    check_context,
    context_length,
    load_config,
    load_sequence_classifier,
    load_tokenizer,
    resolve_model_path,
)
from lorakit.models.lora import check_lora_shapes
from lorakit.packing.model import PackedModel
from lorakit.tasks.base import Prepared, RunArguments, Task
from lorakit.tasks.metrics import LabelSpace, predictions_from_logits, task_metrics, trainer_metrics_fn
from lorakit.training.arguments import check_best_metric


@dataclass
class Example:
    texts: tuple[str, ...]
    label: float | int


@dataclass
class TaskData:
    train: list[Example]
    evals: dict[str, list[Example]]
    source: str


class EncodedDataset(torch.utils.data.Dataset):
    """Tokenized examples; padding is left to the collator, so batches are padded to their own longest example.
    ``sort_by_length`` orders the examples shortest first (for evaluation, where order does not matter), which
    keeps that padding small."""

    def __init__(self, examples: list[Example], tokenizer, max_seq_length: int, sort_by_length: bool = False):
        columns = list(zip(*(e.texts for e in examples), strict=True)) if examples else [[]]
        encodings = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_seq_length)
        order = list(range(len(examples)))
        if sort_by_length:
            order.sort(key=lambda i: len(encodings["input_ids"][i]))
        self.encodings = {key: [values[i] for i in order] for key, values in encodings.items()}
        self.labels = [examples[i].label for i in order]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {**{key: values[i] for key, values in self.encodings.items()}, "labels": self.labels[i]}


def longest_encoding(data: TaskData, tokenizer, max_seq_length: int) -> int:
    """The most tokens any example (training or evaluation) has after truncation to `max_seq_length`."""
    examples = [e for part in (data.train, *data.evals.values()) for e in part]
    columns = [list(c) for c in zip(*(e.texts for e in examples), strict=True)]
    encoded = tokenizer(*columns, truncation=True, max_length=max_seq_length)["input_ids"]
    return max(map(len, encoded), default=0)


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


class SequenceClassificationTask(Task):
    """A task on a sequence classifier (`peft_task_type` SEQ_CLS); see the module's docstring."""

    peft_task_type = "SEQ_CLS"
    sweep_metric, sweep_higher_is_better = "eval_accuracy", True

    def label_space(self, args: RunArguments) -> LabelSpace:
        raise NotImplementedError

    def read_data(self, args: RunArguments) -> TaskData:
        raise NotImplementedError

    def read(self, args: RunArguments) -> Prepared:
        data = self.read_data(args)
        labels, length = self.label_space(args), args.data.max_seq_length
        model_path = resolve_model_path(args.model.model_name_or_path)
        config = load_config(model_path, args.model, num_labels=labels.num_labels)
        check_lora_shapes(config, args.lora)
        tokenizer = load_tokenizer(model_path, args.model)
        if length > (context_length(config) or length):  # only if an example is that long does it matter
            longest = longest_encoding(data, tokenizer, length)
            check_context(config, {f"max_seq_length (examples of {longest} tokens)": longest})
        check_best_metric(args.training, evaluated_metrics(labels, list(data.evals)))
        return Prepared(args, model_path, tokenizer, data, {"labels": labels})

    def load_model(self, prepared: Prepared) -> nn.Module:
        labels, pad = prepared.extra["labels"], prepared.tokenizer.pad_token_id
        return load_sequence_classifier(prepared.model_path, labels.num_labels, prepared.args.model, pad)

    def train_dataset(self, prepared: Prepared):
        return EncodedDataset(prepared.data.train, prepared.tokenizer, prepared.args.data.max_seq_length)

    def eval_datasets(self, prepared: Prepared) -> dict:
        """The evaluation sets, tokenized once and sorted by length (little padding)."""
        if "eval_datasets" not in prepared.extra:
            length, tokenizer = prepared.args.data.max_seq_length, prepared.tokenizer
            evals = {n: EncodedDataset(ex, tokenizer, length, True) for n, ex in prepared.data.evals.items()}
            prepared.extra["eval_datasets"] = evals
        return prepared.extra["eval_datasets"]

    def collator(self, prepared: Prepared):
        return DataCollatorWithPadding(prepared.tokenizer)

    def compute_metrics(self, prepared: Prepared):
        return trainer_metrics_fn(prepared.extra["labels"])

    def best_metric(self, prepared: Prepared) -> tuple[str, bool]:
        labels = prepared.extra["labels"]
        return labels.primary_metric, getattr(labels, "higher_is_better", True)

    def data_record(self, prepared: Prepared) -> dict:
        data = prepared.data
        return {"source": data.source, "train": len(data.train), **{k: len(v) for k, v in data.evals.items()}}

    def summary(self, state: dict, prepared: Prepared) -> str:
        metrics = tuple(prepared.extra["labels"].metrics)
        final = state.get("final") or {}
        return ", ".join(f"{k}={v:.4f}" for k, v in final.items() if k.startswith("eval_") and k.endswith(metrics))

    def packed_model(self, packed, k: int, threshold: float, prepared: Prepared):
        return PackedClassifier(packed, k, prepared.extra["labels"].is_regression, threshold)

    def evaluate_pack(self, trainer, prepared: Prepared) -> list[list[dict]]:
        """Every adapter's metrics, one row per evaluation set. The batches come from the Trainer's own evaluation
        loaders, as in a single run (whose random state they advance alike)."""
        labels, evals = prepared.extra["labels"], self.eval_datasets(prepared)
        wrapper = trainer.model
        wrapper.eval()
        results = [[] for _ in range(wrapper.k)]
        for name, dataset in evals.items():
            prefix = "eval_" if len(evals) == 1 else f"eval_{name}_"
            logits, references, losses = evaluate_slices(trainer, dataset, labels.is_regression)
            for index in range(wrapper.k):
                scores = task_metrics(labels, predictions_from_logits(labels, logits[index]), references)
                row = {f"{prefix}loss": losses[index] / len(references)}
                results[index].append(row | {f"{prefix}{key}": value for key, value in scores.items()})
        wrapper.train()
        return results


@torch.no_grad()
def evaluate_slices(trainer, dataset, regression: bool) -> tuple[list, object, list[float]]:
    """Each adapter's logits (as numpy), the labels, and each adapter's summed loss over `dataset`."""
    wrapper = trainer.model
    logits, labels, losses = [[] for _ in range(wrapper.k)], [], torch.zeros(wrapper.k, dtype=torch.float64)
    for batch in trainer.get_eval_dataloader(dataset):
        out = wrapper(**{n: v for n, v in batch.items() if n != "labels"})["logits"]
        for index in range(wrapper.k):
            logits[index].append(out[index].float().cpu())
            losses[index] += len(batch["labels"]) * float(per_example_loss(out[index], batch["labels"], regression))
        labels.append(batch["labels"].cpu())
    return [torch.cat(part).numpy() for part in logits], torch.cat(labels).numpy(), losses.tolist()


def evaluated_metrics(labels, eval_sets: list[str]) -> list[str]:
    """The metric names an evaluation reports (without eval_): per set when there are several, as the Trainer names
    them."""
    names = ["loss", *labels.metrics]
    return names if len(eval_sets) == 1 else [f"{s}_{n}" for s in eval_sets for n in names]
