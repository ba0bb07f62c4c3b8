"""Saving the adapter of a run that FSDP shards (launch/a10x4_fsdp_qlora.yaml), which the stock stack does not do:

- the Trainer's `save_model` writes weights under FSDP only when the state dict type is FULL_STATE_DICT; with the
  sharded type (the launch config's, so that checkpoints keep the optimizer's state in shards) it writes no adapter;
- PEFT (0.21) picks the adapter's entries out of a state dict by walking `model.named_modules()` and strips only a
  leading FSDP part from the names; FSDP's nested units (one per decoder layer, one per LoRA factor) leave more inside
  them, so nothing matches: the adapter saved is empty, and so are a checkpoint's shards and what a resume loads.

`full_save_type` covers the first, `plain_module_names` the second (`LoraTrainer` applies both);
`materialize_optimizer_state` lets a resumed run load its optimizer's state. All three were found by
running the launch config on CPU processes (tests/test_sharded.py)."""

import contextlib

import torch

from loraplus import plain_name


@contextlib.contextmanager
def full_save_type(plugin):
    """While inside, accelerate's FSDP `plugin` says FULL_STATE_DICT, which is all the Trainer's save checks before
    gathering (`Accelerator.get_state_dict` always gathers a full state dict under FSDP)."""
    kept = plugin.state_dict_type
    plugin.state_dict_type = "FULL_STATE_DICT"
    try:
        yield
    finally:
        plugin.state_dict_type = kept


@contextlib.contextmanager
def plain_module_names(model):
    """While inside, `model.named_modules()` gives each module's name as the model was built, without the parts FSDP
    inserts (`loraplus.plain_name`): the names the state dicts' keys have. PEFT only compares these names with keys and
    checks the modules' types; an FSDP unit and the module it wraps now share a name, so nothing may look modules up by
    them meanwhile. Whatever `model` had as its own `named_modules` before is put back."""

    def named_modules(memo=None, prefix: str = "", remove_duplicate: bool = True):
        for name, module in type(model).named_modules(model, memo, prefix, remove_duplicate):
            yield plain_name(name), module

    saved = vars(model).get("named_modules")
    model.named_modules = named_modules
    try:
        yield
    finally:
        if saved is None:
            vars(model).pop("named_modules", None)
        else:
            model.named_modules = saved


def materialize_optimizer_state(optimizer) -> None:
    """Give an optimizer without state its state (as after one step with zero gradients at lr 0; the trainable
    parameters are put back afterwards, whatever the optimizer does at lr 0). FSDP1's sharded optimizer load
    (accelerate's `load_fsdp_optimizer`) fills in only the state the optimizer already has: a resumed run would
    otherwise start AdamW's moments and step count again from nothing."""
    if optimizer.state:
        return
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    kept = [p.detach().clone() for p in params]
    lrs = [(group["lr"],) if "lr" in group else () for group in optimizer.param_groups]
    try:
        for param in params:
            param.grad = torch.zeros_like(param)
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            if lr:
                group["lr"] = 0.0
        optimizer.step()
    finally:
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            if lr:
                group["lr"] = lr[0]
        with torch.no_grad():
            for param, value in zip(params, kept, strict=True):
                param.copy_(value)
                param.grad = None
