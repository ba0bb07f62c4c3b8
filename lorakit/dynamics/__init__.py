"""The paper's dynamics on real models: what `--lora_diagnostics_steps` measures during a run (`measures`, `layers`,
`callback`) and its figures (`figures`; `python -m lorakit.dynamics plot`)."""
