"""What every pack shares, whatever its runner: the check that its configurations may share a base, the model
wrapper that runs the K adapters on one batch, and the Trainer that gives each adapter its own optimizer groups,
clipping and divergence.

Per configuration: its own loss (the losses are summed, so gradients never mix), its own optimizer groups and
learning rates (the schedule's multiplier is shared, as every run has the same steps), its own gradient clipping,
and its own divergence: an adapter whose loss or gradient norm is non-finite or whose loss exceeds
`divergence_loss_threshold` is frozen from that step on, and the others train on. Divergence is checked every step
(a single run checks the logged loss); fp16 is refused, since one loss scale for all would let one adapter's
overflow skip every adapter's step: use bf16 or fp32.
"""

import copy
import dataclasses
import os

import safetensors.torch
import torch
from torch import nn

from init_schemes import apply_init
from lorakit.core.errors import ConfigError
from lorakit.packing.boards import member_keys
from lorakit.packing.layers import pack_states, peft_named_parameters
from lorakit.training.trainer import LoraTrainer
from loraplus import optimizer_from_groups

PACKABLE = {  # what the configurations of one pack may differ in
    "learning_rate",
    "lora_init",
    "loraplus_lr_ratio",
    "output_dir",
    "lora_init_distribution",
    "lora_init_scale",
}
LOSS_SCALING = ("model_accepts_loss_kwargs", "_loss_shifts_labels")  # the Trainer's, read off the model it is given
CHECKPOINT_FILE = "pack_adapters.safetensors"  # a pack's checkpoint: its adapters and heads, not the frozen base


def check_packable(arguments: list) -> None:
    """Every configuration (its named argument sets) must equal the first outside PACKABLE; init schemes must be
    ours (A or B)."""
    for index, args in enumerate(arguments):
        for section, reference in zip(args.sections().values(), arguments[0].sections().values(), strict=True):
            for key in (f.name for f in dataclasses.fields(section) if f.init and f.name not in PACKABLE):
                value, first_value = getattr(section, key), getattr(reference, key)
                if value != first_value:
                    raise ConfigError(f"pack: configuration {index} differs in {key} ({value!r} vs {first_value!r})")
        train_args = args.training
        if train_args.lora_init not in ("A", "B"):
            raise ConfigError(f"pack: lora_init {train_args.lora_init} is PEFT's own; packs take A or B")
        if train_args.fp16:
            raise ConfigError("pack: fp16 shares one loss scale across the pack; use bf16 or fp32")
        refused = {
            "neftune_noise_alpha": train_args.neftune_noise_alpha,
            "label_smoothing_factor": train_args.label_smoothing_factor,
            "load_best_model_at_end": train_args.load_best_model_at_end,
            "metric_for_best_model": train_args.metric_for_best_model,
            "several processes (world_size > 1)": train_args.world_size > 1,
        }
        for name, value in refused.items():
            if value:
                raise ConfigError(f"pack: {name} is not supported in a pack (yet); run these points unpacked")
    outputs = [args.training.output_dir for args in arguments]
    if len(set(outputs)) != len(outputs):
        raise ConfigError("pack: two configurations share an output_dir")


def initial_states(model, arguments: list) -> tuple[list[dict], list[dict]]:
    """Each configuration's starting adapter (trainable values by PEFT name) and init record. The init draws from
    its own seeded generator, so each equals what the configuration's single run starts from."""
    states, records = [], []
    for args in arguments:
        records.append(apply_init(model, args.training.init_spec()))
        states.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    return states, records


class PackedTrainer(LoraTrainer):
    """The Trainer's loop over a PackedModel: per-adapter optimizer groups, clipping and divergence; checkpoints
    that hold the adapters only."""

    def __init__(self, *args, adapter_groups, loss_scaling: dict, on_divergence=None, evaluate_fn=None, **kwargs):
        self.adapter_groups, self.evaluate_fn = adapter_groups, evaluate_fn
        self.on_divergence = on_divergence or (lambda index, step, reason: None)
        super().__init__(*args, **kwargs)
        for name, value in loss_scaling.items():  # as the single runs' Trainer (see `single_run_trainer`)
            setattr(self, name, value)
        self.adapter_params = [[p for g in groups for p in g["params"]] for groups in adapter_groups]
        self.loss_sums, self.loss_steps = None, 0  # each adapter's step losses since the last log
        self.step_learning_rates: list[float] = []  # every group's lr in the step just taken (read before it)

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            kwargs = {k: v for k, v in kwargs.items() if k not in ("lr", "weight_decay")}
            groups = [group for adapter in self.adapter_groups for group in adapter]
            # not checked against the trainable parameters: a frozen (diverged) adapter keeps its groups
            self.optimizer = optimizer_from_groups(optimizer_cls, groups, lr=self.args.learning_rate, **kwargs)
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
        """Each live adapter's gradient norm, its divergence check and (when `clip`) its clipping; one host sync. The
        loss checked is the step's loss as the Trainer logs it: summed over the micro-batches, each divided by their
        number unless the Trainer hands the model the accumulated batch's token count (it does whenever the model's
        forward takes loss keywords, whether or not the model uses them)."""
        packed, live = self.model, list(self.model.live)
        losses, packed.step_losses = packed.step_losses, None
        if not live or losses is None:
            return torch.tensor(0.0)
        if not self.model_accepts_loss_kwargs:
            losses = losses / self.current_gradient_accumulation_steps  # this step's micro-batches
        self.loss_sums = losses if self.loss_sums is None else self.loss_sums + losses
        self.loss_steps += 1
        self.step_learning_rates = [group["lr"] for group in self.optimizer.param_groups]  # before the scheduler moves
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

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        tensors = {name: value.detach().contiguous() for name, value in self.model.adapter_state_dict().items()}
        safetensors.torch.save_file(tensors, os.path.join(output_dir, CHECKPOINT_FILE), metadata={"format": "pt"})
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        path = os.path.join(resume_from_checkpoint, CHECKPOINT_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"{resume_from_checkpoint} is not a checkpoint of a pack (no {CHECKPOINT_FILE})")
        state = safetensors.torch.load_file(path, device="cpu")
        expected = self.model.adapter_state_dict().keys()
        if state.keys() != expected:
            raise ValueError(f"{path} holds another pack's adapters (its tensors differ from this pack's)")
        self.model.load_state_dict(state, strict=False)
        for index, step in enumerate(self.model.diverged_at.tolist()):
            if step >= 0:
                self.freeze(index, "", step)  # the reason was kept when it happened (see PackResults)

    def log(self, logs: dict, *args, **kwargs) -> None:
        """The Trainer's log, plus each live adapter's own loss and learning rates (`lorakit.packing.boards`)."""
        if "loss" in logs and self.loss_steps:
            losses = (self.loss_sums / self.loss_steps).tolist()
            self.loss_sums, self.loss_steps = None, 0
            logs = {**logs, **member_keys(losses, self.member_learning_rates(), list(self.model.live))}
        super().log(logs, *args, **kwargs)

    def member_learning_rates(self) -> list[dict[str, float]]:
        """Each adapter's groups → the learning rate of the step just taken, as the Trainer logs its own (read before
        the scheduler's step; the optimizer holds adapter 0's groups, then 1's…)."""
        rates, at = [], iter(self.step_learning_rates)
        for adapter in self.adapter_groups:
            rates.append({g.get("name") or f"group{j}": next(at, float("nan")) for j, g in enumerate(adapter)})
        return rates

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        metrics = self.evaluate_fn(self.state.global_step, self.state.epoch)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def single_run_trainer(model, train_args) -> tuple[list[tuple[dict, list[str]]], dict]:
    """What a single run's Trainer would do with `model`: its optimizer groups as (options, parameter names), and
    how it scales the loss (the Trainer's attributes LOSS_SCALING: whether it hands the model the number of labelled
    tokens in the accumulated batch, and whether it counts them after the causal-LM shift), which it decides by
    looking at the model and would decide otherwise for a packed one."""
    quiet = copy.copy(train_args)  # a Trainer only to ask: no evaluation set needed
    quiet.eval_strategy = "no"
    trainer = LoraTrainer(model=model, args=quiet)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = [
        ({k: v for k, v in g.items() if k != "params"}, [names[id(p)] for p in g["params"]])
        for g in optimizer.param_groups
    ]
    return groups, {name: getattr(trainer, name) for name in LOSS_SCALING}


def adapter_groups(groups: list[tuple[dict, list[str]]], model, index: int) -> list[dict]:
    """`groups` (by the PEFT model's parameter names) on adapter `index`'s packed parameters."""
    mapping = peft_named_parameters(model, index)
    return [{**options, "params": [mapping[n] for n in group]} for options, group in groups]


def pack_for_training(model, arguments: list, states: list[dict]) -> tuple[nn.Module, list[list[dict]], dict]:
    """`model` (a PEFT model) packed in place with the configurations' starting `states`: the packed model, each
    configuration's optimizer groups on its own adapter, and the loss scaling of their single runs' Trainer."""
    singles = [single_run_trainer(model, args.training) for args in arguments]
    packed = pack_states(model, states)
    groups = [adapter_groups(options, model, index) for index, (options, _) in enumerate(singles)]
    return packed, groups, singles[0][1]
