"""Packed run_glue.py: K configurations of one sweep trained together on one frozen base.

The K configurations may differ in learning rate, init scheme and LoRA+ ratio (and their output directories); all
else must be equal, the seed included, so that every configuration sees the same data in the same order as its own
single run and starts from the same head. Each configuration gets what its single run writes: `run_config.json`,
`metrics.json` (with `packed` naming the pack) and, when done, its PEFT adapter.

Per configuration: its own loss (the losses are summed, so gradients never mix), its own optimizer groups and
learning rates (the schedule's multiplier is shared, as every run has the same steps), its own gradient clipping,
and its own divergence: an adapter whose loss or gradient norm is non-finite or whose loss exceeds
`divergence_loss_threshold` is frozen from that step on, and the others train on. Divergence is checked every step
(a single run checks the logged loss); fp16 is refused, since one loss scale for all would let one adapter's
overflow skip every adapter's step: use bf16 or fp32.
"""

import copy
import dataclasses
import json
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import DataCollatorWithPadding, set_seed

import run_glue
from finetune.arguments import ConfigError
from finetune.atomic import write_json_atomic
from finetune.glue_data import EncodedDataset
from finetune.metrics import predictions_from_logits, task_metrics
from finetune.modeling import add_lora, load_sequence_classifier, load_tokenizer
from finetune.results import RunRecorder, resolved_config
from init_schemes import apply_init
from loraplus import LoraPlusTrainer
from packing.layers import pack_states, peft_named_parameters, unpacked

logger = logging.getLogger(__name__)
PACKABLE = {
    "learning_rate",
    "lora_init",
    "loraplus_lr_ratio",
    "output_dir",
    "lora_init_distribution",
    "lora_init_scale",
}


def check_packable(prepared: list) -> None:
    """Every configuration must equal the first outside PACKABLE; init schemes must be ours (A or B)."""
    first = prepared[0][0]
    for index, (args, _, _) in enumerate(prepared):
        for section, reference in zip(args, first, strict=True):
            for key in (f.name for f in dataclasses.fields(section) if f.init and f.name not in PACKABLE):
                value, first_value = getattr(section, key), getattr(reference, key)
                if value != first_value:
                    raise ConfigError(f"pack: configuration {index} differs in {key} ({value!r} vs {first_value!r})")
        train_args = args[3]
        if train_args.lora_init not in ("A", "B"):
            raise ConfigError(f"pack: lora_init {train_args.lora_init} is PEFT's own; packs take A or B")
        if train_args.fp16:
            raise ConfigError("pack: fp16 shares one loss scale across the pack; use bf16 or fp32")
        refused = {
            "gradient_checkpointing": train_args.gradient_checkpointing,
            "load_best_model_at_end": train_args.load_best_model_at_end,
            "metric_for_best_model": train_args.metric_for_best_model,
            "several processes (world_size > 1)": train_args.world_size > 1,
        }
        for name, value in refused.items():
            if value:
                raise ConfigError(f"pack: {name} is not supported in a pack (yet); run these points unpacked")
    outputs = [args[3].output_dir for args, _, _ in prepared]
    if len(set(outputs)) != len(outputs):
        raise ConfigError("pack: two configurations share an output_dir")


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """The loss transformers' sequence classifiers compute, for one slice."""
    if regression:
        return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float())
    return nn.functional.cross_entropy(logits.float(), labels)


class PackedClassifier(nn.Module):
    """Repeats each batch K times; slice k goes through adapter k. The loss is the sum of the live adapters' losses.
    `step_losses` keeps each adapter's largest micro-batch loss since the last optimizer step."""

    def __init__(self, packed: nn.Module, k: int, regression: bool, threshold: float):
        super().__init__()
        self.packed, self.k, self.regression, self.threshold = packed, k, regression, threshold
        self.register_buffer("diverged_at", torch.full((k,), -1, dtype=torch.long))  # kept in checkpoints
        self.live = list(range(k))  # a host-side mirror of diverged_at < 0 (no device sync per step)
        self.step_losses: torch.Tensor | None = None

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        repeated = {n: v.repeat(self.k, 1) for n, v in inputs.items() if v is not None}
        logits = self.packed(**repeated).logits.view(self.k, len(input_ids), -1)
        if labels is None:
            return {"logits": logits}
        losses = torch.stack([per_example_loss(logits[i], labels, self.regression) for i in range(self.k)])
        if self.training:
            seen = losses.detach()
            self.step_losses = seen if self.step_losses is None else torch.maximum(self.step_losses, seen)
        return {"loss": losses[self.live].sum(), "logits": logits}


class PackedTrainer(LoraPlusTrainer):
    """The Trainer's loop over a PackedClassifier: per-adapter optimizer groups, clipping and divergence."""

    def __init__(self, *args, adapter_groups, on_divergence, evaluate_fn, accepts_loss_kwargs: bool, **kwargs):
        self.adapter_groups, self.on_divergence, self.evaluate_fn = adapter_groups, on_divergence, evaluate_fn
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = accepts_loss_kwargs  # as the single runs' Trainer: same loss scaling
        self.adapter_params = [[p for g in groups for p in g["params"]] for groups in adapter_groups]

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            kwargs = {k: v for k, v in kwargs.items() if k not in ("lr", "weight_decay")}
            groups = [group for adapter in self.adapter_groups for group in adapter]
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **kwargs)
        return self.optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        if not self.model.live:  # every adapter diverged (e.g. before a resume): nothing left to train
            self.control.should_training_stop = True
            return torch.zeros((), device=self.args.device)
        return super().training_step(model, inputs, num_items_in_batch)

    def _clip_grad_norm(self, model):
        return self.per_adapter_step(clip=True)

    def _get_grad_norm(self, model, grad_norm=None):
        if grad_norm is None:  # --max_grad_norm 0: no clipping, but divergence is still checked per adapter
            grad_norm = self.per_adapter_step(clip=False)
        return super()._get_grad_norm(model, grad_norm)

    def per_adapter_step(self, clip: bool) -> torch.Tensor:
        """Each live adapter's gradient norm, its divergence check and (when `clip`) its clipping; one host sync."""
        packed, live = self.model, list(self.model.live)
        losses, packed.step_losses = packed.step_losses, None
        if not live or losses is None:
            return torch.tensor(0.0)
        grads = [[p.grad for p in self.adapter_params[i] if p.grad is not None] for i in live]
        zero = losses.new_zeros(())
        norms = torch.stack([torch.nn.utils.get_total_norm(g).to(zero.device) if g else zero for g in grads])
        losses = losses[live]
        bad = ~torch.isfinite(norms) | ~torch.isfinite(losses) | (losses > packed.threshold)
        coefficients = (self.args.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for index, is_bad, loss, norm in zip(live, bad.tolist(), losses.tolist(), norms.tolist(), strict=True):
            if is_bad:
                self.freeze(index, f"training loss {loss:.4g}, gradient norm {norm:.4g}")
        if clip:
            for position, index in enumerate(live):
                if grads[position] and index in packed.live:
                    torch._foreach_mul_(grads[position], coefficients[position])
        kept = norms[~bad]
        return kept.max() if len(kept) else torch.tensor(0.0)

    def freeze(self, index: int, reason: str, step: int | None = None) -> None:
        """Adapter `index` diverged: it takes no more steps (its slice still runs, and touches nothing else)."""
        step = self.state.global_step + 1 if step is None else step
        self.model.diverged_at[index] = step
        if index in self.model.live:
            self.model.live.remove(index)
        for param in self.adapter_params[index]:
            param.grad = None
            param.requires_grad_(False)
        self.on_divergence(index, step, reason)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        for index, step in enumerate(self.model.diverged_at.tolist()):
            if step >= 0:
                self.freeze(index, "", step)  # the reason was kept when it happened (see run_packed)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        metrics = self.evaluate_fn(self.state.global_step, self.state.epoch)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def single_run_trainer(model, train_args) -> tuple[list[tuple[dict, list[str]]], bool]:
    """What a single run's Trainer would do with `model`: its optimizer groups as (options, parameter names), and
    whether it hands the model `num_items_in_batch` (which decides how it scales the loss)."""
    quiet = copy.copy(train_args)  # a Trainer only to ask: no evaluation set needed
    quiet.eval_strategy = "no"
    trainer = LoraPlusTrainer(model=model, args=quiet)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [
        ({k: v for k, v in g.items() if k != "params"}, [names[id(p)] for p in g["params"]])
        for g in optimizer.param_groups
    ]
    return groups, trainer.model_accepts_loss_kwargs


def adapter_groups(groups: list[tuple[dict, list[str]]], model, index: int) -> list[dict]:
    """`groups` (by the PEFT model's parameter names) on adapter `index`'s packed parameters."""
    mapping = peft_named_parameters(model, index)
    return [{**options, "params": [mapping[n] for n in group]} for options, group in groups]


def run_packed(argvs: list[list[str]], pack_dir: str | None = None) -> int:
    """Train run_glue.py's K configurations `argvs` as one pack (checkpoints in `pack_dir`, by default a folder
    beside the first configuration's); 0 when every configuration ended done or diverged."""
    prepared = [run_glue.prepare(argv) for argv in argvs]
    check_packable(prepared)
    (model_args, lora_args, data_args, train_args), data, model_path = prepared[0]
    all_args = [args for args, _, _ in prepared]
    task, k = data_args.task, len(prepared)
    set_seed(train_args.seed)  # as the single runs: the head's init comes from this seed
    tokenizer = load_tokenizer(model_path, model_args)
    model = load_sequence_classifier(model_path, task.num_labels, model_args, tokenizer.pad_token_id)
    model, _ = add_lora(model, lora_args, train_args.init_spec(), "SEQ_CLS")
    states, records = [], []
    for args in all_args:
        records.append(apply_init(model, args[3].init_spec()))
        states.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    members = [args[3].output_dir for args in all_args]
    recorders = []
    for index, (args, record) in enumerate(zip(all_args, records, strict=True)):
        recorder = RunRecorder.for_training(args[3], task.primary_metric)
        data_record = {"source": data.source, "train": len(data.train), **{n: len(v) for n, v in data.evals.items()}}
        sections = dict(zip(("model", "lora", "data", "training"), args, strict=True))
        extras = {"model_path": model_path, "init": record, "data_sizes": data_record}
        extras |= {"packed": {"index": index, "size": k, "members": members}}
        recorder.write_config(resolved_config(sections, {**extras, **args[3].training_record(model)}))
        recorder.record("packed", {"index": index, "size": k})
        if train_args.resume_from_checkpoint:
            recorder.record("resumed_from", str(train_args.resume_from_checkpoint))
        recorders.append(recorder)

    singles = [single_run_trainer(model, args[3]) for args in all_args]
    packed = pack_states(model, states)
    groups = [adapter_groups(g, model, index) for index, (g, _) in enumerate(singles)]
    wrapper = PackedClassifier(packed, k, task.is_regression, train_args.divergence_loss_threshold)
    evals = {n: EncodedDataset(ex, tokenizer, data_args.max_seq_length, True) for n, ex in data.evals.items()}
    collate = DataCollatorWithPadding(tokenizer)
    pack_dir = pack_dir or str(Path(members[0]).parent / f"pack-{Path(members[0]).name}-k{k}")
    reasons_file = Path(pack_dir) / "diverged.json"  # why each adapter diverged, kept across resumes
    resumed = train_args.resume_from_checkpoint is not None
    diverged = {int(i): tuple(v) for i, v in read_json(reasons_file).items()} if resumed else {}

    def on_divergence(index: int, step: int, reason: str) -> None:
        if index in diverged:  # re-frozen after a resume: the first reason stands
            return
        diverged[index] = (step, reason)
        write_json_atomic(reasons_file, {str(i): list(v) for i, v in diverged.items()})
        logger.warning("configuration %d (%s) diverged at step %d: %s", index, members[index], step, reason)

    def evaluate(step: int, epoch: float | None) -> dict:
        results = evaluate_pack(trainer, evals, task)
        merged = {}
        for index in wrapper.live:
            for row in results[index]:  # one row per evaluation set, as a single run records them
                recorders[index].add_evaluation(row, step, epoch)
                merged |= {f"eval_{index}_{key}": value for key, value in row.items()}
        return merged

    pack_args = copy.copy(train_args)  # checkpoints go to the pack's own folder, beside its members' run folders
    pack_args.output_dir = pack_dir
    trainer = PackedTrainer(
        model=wrapper,
        args=pack_args,
        train_dataset=EncodedDataset(data.train, tokenizer, data_args.max_seq_length),
        eval_dataset=next(iter(evals.values())),  # the Trainer asks for one; `evaluate_fn` scores them all
        data_collator=collate,
        processing_class=tokenizer,
        adapter_groups=groups,
        on_divergence=on_divergence,
        evaluate_fn=evaluate,
        accepts_loss_kwargs=singles[0][1],
    )
    try:
        trainer.train(resume_from_checkpoint=train_args.resume_from_checkpoint)
        last = trainer.state.global_step
        for index in range(k):
            if index in diverged:
                step, reason = diverged[index]
                recorders[index].finish("diverged", diverged_at_step=step, reason=reason)
                continue
            evaluations = recorders[index].state["evaluations"]
            if not (evaluations and evaluations[-1]["step"] == last):
                evaluate(last, trainer.state.epoch)
            final = recorders[index].state["evaluations"][-1]
            with unpacked(model, index) as single:
                single.save_pretrained(all_args[index][3].output_dir)
                tokenizer.save_pretrained(all_args[index][3].output_dir)
            recorders[index].finish("done", final=final)
    except BaseException as err:
        for index, recorder in enumerate(recorders):
            if recorder.state["status"] != "running":
                continue
            if index in diverged:  # its outcome was settled before the failure
                recorder.finish("diverged", diverged_at_step=diverged[index][0], reason=diverged[index][1])
            else:
                recorder.finish("failed", error=f"{type(err).__name__}: {err}")
        raise
    for index, member in enumerate(members):
        print(f"done [{index}]: {recorders[index].state['status']} -> {member}")
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


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
