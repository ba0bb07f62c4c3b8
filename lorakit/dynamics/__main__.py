"""python -m lorakit.dynamics plot RUN_DIR… [--out FILE]: RMS Z_A, Z_B, δ¹ and δ² against step, one line per run
(runs trained with --lora_diagnostics_steps N; a pack's members are run folders too)."""

import sys
from pathlib import Path

from lorakit.core.errors import ConfigError, one_line
from lorakit.core.parsing import CommandParser
from lorakit.dynamics.figures import plot_runs


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m lorakit.dynamics", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    plot = commands.add_parser("plot", help="the diagnostics of run folders against step")
    plot.add_argument("runs", nargs="+", type=Path, help="run folders holding diagnostics_summary.jsonl")
    plot.add_argument("--out", type=Path, default=Path("dynamics.png"), help="the figure's file (.png, .pdf, .svg)")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
        print(plot_runs(args.runs, args.out))
        return 0
    except ConfigError as err:
        print(f"lorakit.dynamics: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
