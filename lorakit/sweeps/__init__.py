"""Sweeps: grids of runs of a task, run locally or on SLURM, resumable, packed where they can be, and reported."""
