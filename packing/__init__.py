"""`python -m packing <pack.json>` from a clone: `python -m lorakit pack` (this folder is not installed)."""
