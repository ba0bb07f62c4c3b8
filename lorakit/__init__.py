"""The LoRA initialization toolkit: Init[A] vs Init[B] with LoRA+, on any task, single or packed, swept.

Layers, each importing only from the ones above it in this list (and `init_schemes`, `loraplus`):

- `core`: errors, range rules, argument parsing, files (atomic writes, user files), secrets, run folders;
- `models`: model arguments, loading (embedded defaults, quantization), LoRA;
- `training`: training arguments, the Trainer, the precision policy, run records, exit codes;
- `packing`: K adapters on one base (layers, model, Trainer, results, memory probe);
- `tasks`: the workloads (`glue`, `lm`), each written once for every run mode;
- `runs`: the one run path (a single run, a pack, a probe);
- `sweeps`: grids of runs, local or on SLURM, and their reports.

`toy` (the §3 teacher–student model) stands apart: it uses `core` and `training` only.
"""
