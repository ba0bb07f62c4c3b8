"""Run a script (the arguments after this file's name) as one process of an `accelerate launch` with an FSDP config,
on CPU processes talking over gloo: what tests/test_sharded.py launches. Accelerate runs FSDP only on accelerators,
while torch's FSDP itself runs on CPUs; this file changes no more than that, before the script starts:

- the accelerator state, which accelerate makes MULTI_CPU on CPUs, is made FSDP with the launch's FSDP settings;
- FSDP gets `device_id` cpu (accelerate hands it cpu:0, which FSDP's CPU check does not accept);
- a full state dict is gathered without offloading to the CPU it is already on (which crashes FSDP on CPU).

The launch must also turn off the two loading settings that need an accelerator (fsdp_cpu_ram_efficient_loading and
fsdp_sync_module_states)."""

import runpy
import sys

import accelerate.state
import torch
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel

stock_state_init = accelerate.state.AcceleratorState.__init__
stock_fsdp_init = FullyShardedDataParallel.__init__
stock_full_config_init = FullStateDictConfig.__init__


def fsdp_state_init(self, *args, **kwargs):
    stock_state_init(self, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = accelerate.state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        if getattr(self, "fsdp_plugin", None) is None:
            self.fsdp_plugin = FullyShardedDataParallelPlugin()


def cpu_fsdp_init(self, module, *args, device_id=None, **kwargs):
    stock_fsdp_init(self, module, *args, device_id=torch.device("cpu"), **kwargs)


def full_config_in_place(self, offload_to_cpu: bool = False, rank0_only: bool = False):
    stock_full_config_init(self, offload_to_cpu=False, rank0_only=rank0_only)


if __name__ == "__main__":
    accelerate.state.AcceleratorState.__init__ = fsdp_state_init
    FullyShardedDataParallel.__init__ = cpu_fsdp_init
    FullStateDictConfig.__init__ = full_config_in_place
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
