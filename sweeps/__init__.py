"""`python -m sweeps` from a clone: the sweep tool, `lorakit.sweeps` (this folder is not installed)."""
