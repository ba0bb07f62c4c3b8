"""Finetune a sequence classifier with LoRA under Init[A] or Init[B], with or without LoRA+.

    python run_glue.py                                   # embedded default: MiniLM on movie reviews, CPU, minutes
    accelerate launch --config_file launch/cpu.yaml run_glue.py --lora_init B --loraplus_lr_ratio 16
    accelerate launch --config_file launch/single_gpu.yaml run_glue.py \\
        --config launch/roberta_large_glue.yaml --task_name sst2 --glue_dir ../shared/data/glue --lora_init A

The output directory gets run_config.json (every setting, the init record, LoRA+ groups, versions), metrics.json
(status, every evaluation, every attempt) and the adapter in PEFT format (`PeftModel.from_pretrained` loads it).
Running the same command again resumes an unfinished run from its newest complete checkpoint.
"""

import sys

from lorakit.runs.single import main as run
from lorakit.tasks.glue.task import GlueClassification

TASK = GlueClassification()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, prepare the glue task (nothing loaded yet), train, record."""
    return run(TASK, sys.argv[1:] if argv is None else argv, "run_glue.py")


if __name__ == "__main__":
    sys.exit(main())
