"""The paper's toy teacher–student experiment (§3): optimal lr against width for Init[A] and Init[B].

    python run_toy.py                                        # the default sweep, ≤ 10 min on 2 CPU cores
    python run_toy.py --widths 128 512 2048 --steps 100      # a quicker look
    python run_toy.py --inits A --loraplus_ratio 16          # LoRA+ under Init[A]

Writes results.csv (one row per width × init × lr × seed), curves.csv, optima.csv, checks.csv, run_config.json and
three PNG figures into --output_dir, and prints the paper's claims as a pass/fail table. Finished widths are kept
after each width, so a rerun of the same command resumes where a killed one stopped.
"""

import sys

from lorakit.toy.experiment import prepare, run
from lorakit.training.command import run_command


def main(argv: list[str]) -> int:
    return run_command("run_toy.py", lambda: prepare(argv), run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
