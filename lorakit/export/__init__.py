"""A finished run exported for other tools: its adapter merged into the base (`python -m lorakit.export`)."""
