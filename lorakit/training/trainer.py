"""The Trainer of every LoRA run, single or packed: LoRA+ optimizer groups when `loraplus_lr_ratio` is set (built
by `loraplus`'s one optimizer factory), the precision policy of `lorakit.training.precision`, a length-grouped
sampler seeded per epoch (so a resumed run is exact), and fewer per-step walks over the model."""

import contextlib
import logging
import types
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from transformers import Trainer
from transformers.trainer_pt_utils import LengthGroupedSampler

from lorakit.training.card import write_model_card
from lorakit.training.sharded_save import full_save_type, materialize_optimizer_state, plain_module_names
from loraplus import describe_param_groups, optimizer_from_groups, param_ndims

logger = logging.getLogger(__name__)


class LoraTrainer(Trainer):
    """`transformers.Trainer` with LoRA+ parameter groups (see `loraplus.groups`) and the mixed precision of
    `LoraTrainingArguments.mixed_precision_for`. The training loop is the Trainer's, minus per-step walks over
    every module and parameter that a LoRA model (thousands of modules, a few hundred trainable tensors) pays for in
    Python: on a launch-bound GPU step they cost as much as the kernels (docs/benchmarks.md)."""

    _flops_per_token: int | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Taken before FSDP wraps the model and flattens its parameters (`create_optimizer`); not needed otherwise.
        self.param_ndims = param_ndims(self.model) if self.is_fsdp_enabled else None

    def train(self, *args, **kwargs):
        sharding = self.is_fsdp_enabled or self.is_deepspeed_enabled  # they replace or wrap what the switches hold
        with contextlib.nullcontext() if sharding else cheap_mode_switches(self.model):
            return super().train(*args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The stock save, which under FSDP writes the adapter also when the state dict type is the sharded one, for
        checkpoints too (`lorakit.training.sharded_save`)."""
        plugin = getattr(self.accelerator.state, "fsdp_plugin", None) if self.is_fsdp_enabled else None
        with contextlib.nullcontext() if plugin is None else full_save_type(plugin):
            return super().save_model(output_dir, _internal_call)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        with self._plain_names():
            return super()._save(output_dir, state_dict)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        with self._plain_names():  # under FSDP, the checkpoint's shards of the adapter, found by PEFT
            return super()._save_optimizer_and_scheduler(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        with self._plain_names():
            return super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        with self._plain_names():
            return super()._load_best_model()

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is not None and self.is_fsdp_enabled and (Path(checkpoint) / "optimizer_0").is_dir():
            materialize_optimizer_state(getattr(self.optimizer, "optimizer", self.optimizer))
        with self._plain_names():  # the names the optimizer's state was saved under
            return super()._load_optimizer_and_scheduler(checkpoint)

    def _plain_names(self):
        """Under FSDP, the PEFT model answers PEFT's walk over its modules with their names as built
        (`lorakit.training.sharded_save.plain_module_names`)."""
        if not self.is_fsdp_enabled:
            return contextlib.nullcontext()
        return plain_module_names(self.accelerator.unwrap_model(self.model, keep_torch_compile=False))

    def create_model_card(self, *args, **kwargs) -> None:
        """The card `push_to_hub` uploads is the run's own (`lorakit.training.card`), not the Trainer's generic one;
        its final metrics are the ones `train_and_finish` hands it before saving."""
        write_model_card(Path(self.args.output_dir), getattr(self, "final_metrics", None))

    def floating_point_ops(self, inputs: dict) -> int:
        """The Trainer's estimate (6 × tokens × non-embedding parameters), with the parameter count taken once."""
        if self._flops_per_token is None:
            counts = hasattr(self.model, "num_parameters")
            self._flops_per_token = 6 * self.model.num_parameters(exclude_embeddings=True) if counts else 0
        main_input = getattr(self.model, "main_input_name", "input_ids")
        return self._flops_per_token * inputs[main_input].numel() if main_input in inputs else 0

    def _get_train_sampler(self, train_dataset=None):
        """The Trainer's sampler, except that group_by_length shuffles from (seed, epoch), not from the global random
        state: a run resumed in a later epoch then sees the order its uninterrupted run saw."""
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            return SeededLengthGroupedSampler(sampler.batch_size, lengths=sampler.lengths, seed=seed)
        return sampler

    def _clip_grad_norm(self, model):
        plain = self.accelerator.distributed_type in (DistributedType.NO, DistributedType.MULTI_GPU)
        if not plain or getattr(self.args, "parallelism_config", None) is not None:  # sharded gradients: the stock way
            return super()._clip_grad_norm(model)
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        return self.accelerator.clip_grad_norm_(trainable, self.args.max_grad_norm)

    def _build_accelerator_args(self, **kwargs) -> dict:
        accelerator_args = super()._build_accelerator_args(**kwargs)
        engine = self.args.deepspeed or self.args.fsdp  # they set their own precision from --bf16; leave them be
        if hasattr(self.args, "mixed_precision_for") and self.model is not None and not engine:
            accelerator_args["mixed_precision"] = self.args.mixed_precision_for(self.model)
        return accelerator_args

    def create_optimizer(self, model=None):
        ratio = getattr(self.args, "loraplus_lr_ratio", None)
        if ratio is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        kwargs = {k: v for k, v in optimizer_kwargs.items() if k not in ("lr", "weight_decay")}
        groups = self.args.loraplus_groups(opt_model, self.param_ndims)
        lr = self.args.learning_rate
        self.optimizer = optimizer_from_groups(optimizer_cls, groups, model=opt_model, lr=lr, **kwargs)
        shards = " (params: this process's shards)" if self.is_fsdp_enabled else ""
        table = describe_param_groups(self.optimizer.param_groups)
        logger.info("LoRA+ optimizer groups (ratio %g)%s:\n%s", ratio, shards, table)
        return self.optimizer


class SeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped sampler whose shuffle for epoch e comes from a generator seeded with seed + e
    (the Trainer calls `set_epoch` before each epoch)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


@contextlib.contextmanager
def cheap_mode_switches(model: torch.nn.Module):
    """While training, `model.train()` and `model.zero_grad()` skip their recursive walks over every module when
    there is nothing to do: train(mode) only checks each module's flag when every module is in that mode already (the
    Trainer asks for it every step), and zero_grad() clears the parameters from a list made once. Both give exactly
    the results of the full walks. The overrides are methods bound to `model` (a deep copy binds them to the copy),
    and whatever the instance had before is put back afterwards. Modules and parameters added or replaced during
    training are not seen: `LoraTrainer.train` does without these under FSDP (FSDP2 replaces every parameter, which
    left every gradient accumulating across steps) and DeepSpeed."""
    saved = {name: vars(model)[name] for name in ("train", "zero_grad") if name in vars(model)}
    model._cheap_modules, model._cheap_params = list(model.modules()), list(model.parameters())
    model.train, model.zero_grad = types.MethodType(_train, model), types.MethodType(_zero_grad, model)
    try:
        yield
    finally:
        for name in ("train", "zero_grad", "_cheap_modules", "_cheap_params"):
            vars(model).pop(name, None)
        vars(model).update(saved)


def _train(self, mode: bool = True):
    if all(m.training == mode for m in self._cheap_modules):
        return self
    return type(self).train(self, mode)


def _zero_grad(self, set_to_none: bool = True) -> None:
    if not set_to_none:
        return type(self).zero_grad(self, set_to_none)
    for param in self._cheap_params:
        param.grad = None
