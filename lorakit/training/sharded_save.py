"""Saving the adapter of a run that FSDP shards (launch/a10x4_fsdp_qlora.yaml), which the stock stack does not do:

- the Trainer's `save_model` writes weights under FSDP only when the state dict type is FULL_STATE_DICT; with the
  sharded type (the launch config's, so that checkpoints are written in shards) it writes no adapter at all;
- PEFT (0.21) picks the adapter's entries out of the gathered state dict by walking `model.named_modules()` and strips
  only a leading FSDP segment from the names; FSDP's nested units (one per decoder layer, one per LoRA factor) leave
  more inside them, so nothing matches and an empty adapter is written.

`full_save_type` covers the first, `plain_module_names` the second. Both were found by running the launch config on
CPU processes (tests/test_sharded.py)."""

import contextlib

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
    """While inside, `model.named_modules()` gives each module's name as the model was built, without the segments
    FSDP inserts (`loraplus.plain_name`): the names the gathered state dict's keys have."""

    def named_modules(memo=None, prefix: str = "", remove_duplicate: bool = True):
        for name, module in type(model).named_modules(model, memo, prefix, remove_duplicate):
            yield plain_name(name), module

    model.named_modules = named_modules
    try:
        yield
    finally:
        del model.named_modules
