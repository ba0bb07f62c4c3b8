"""Finetune a causal LM with LoRA under Init[A] or Init[B], with or without LoRA+, optionally on a 4/8-bit base.

    python run_llm.py                     # embedded default: SmolLM2-135M on Shakespeare, CPU, a few minutes
    accelerate launch --config_file launch/a10_bf16.yaml run_llm.py --config launch/tinyllama_wikitext2.yaml
    accelerate launch --config_file launch/a10_bf16.yaml run_llm.py --config launch/llama7b_4bit_gsm8k.yaml

Tasks: shakespeare (embedded), text (a folder of .txt), wikitext2 (perplexity on test), gsm8k (exact match of the
final number under greedy generation), instruct (prompt/response JSONL, scored on MMLU by answer-letter likelihood).
Every metric is measured before and after training on the same examples. The output directory gets run_config.json,
metrics.json (status, ``before``, ``final``, evaluations, attempts) and the adapter in PEFT format. Running the same
command again resumes an unfinished run from its newest complete checkpoint.
"""

import sys

from lorakit.runs.single import main as run
from lorakit.tasks.lm.task import LanguageModelling

TASK = LanguageModelling()


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, prepare the lm task (nothing loaded yet), train, record."""
    return run(TASK, sys.argv[1:] if argv is None else argv, "run_llm.py")


if __name__ == "__main__":
    sys.exit(main())
