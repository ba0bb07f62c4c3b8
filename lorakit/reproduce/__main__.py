"""python -m lorakit.reproduce --scale quick|cpu|paper|<scale.yaml>: the paper's claims, stage by stage, in one report

    python -m lorakit.reproduce --scale quick                       # a first look, ≤ 10 min on 2 CPU cores, offline
    python -m lorakit.reproduce --scale cpu --glue_dir ../shared/data/glue --wikitext_dir ../shared/data/lm/wikitext-2
    python -m lorakit.reproduce --scale paper --dry-run             # parse every run of the paper's recipes
    python -m lorakit.reproduce --scale paper --stages roberta_sst2 --backend slurm   # one stage, on a cluster

Runs each stage of the scale (`lorakit.reproduce.scale`) into --output_dir/<stage>/ — the toy model (§3), the width
check, sweeps of real runs through `lorakit.sweeps` — then writes report.md, claims.csv and reproduction.png there.
Rerunning the same command after a kill repeats no finished run. Data options left unset mean the hub.
"""

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lorakit.core.errors import ConfigError
from lorakit.core.parsing import parse_args
from lorakit.core.run_folder import writable_dir
from lorakit.reproduce.report import write_report
from lorakit.reproduce.scale import DATA_FLAGS, load_scale
from lorakit.reproduce.stages import check_stage, run_stage
from lorakit.training.command import run_command

NAME = "python -m lorakit.reproduce"
BACKENDS = ("local", "slurm")


@dataclass
class ReproduceArguments:
    scale: str = field(default="quick", metadata={"help": "quick, cpu, paper (launch/reproduce/) or a scale file."})
    output_dir: str | None = field(default=None, metadata={"help": "Default: outputs/reproduce/<scale name>."})
    stages: list[str] = field(default_factory=list, metadata={"help": "Run only these stages (default: all)."})
    dry_run: bool = field(default=False, metadata={"help": "Parse every stage's runs; train nothing."})
    retry_failed: bool = field(default=False, metadata={"help": "Run the sweeps' failed runs again."})
    backend: str = field(default="local", metadata={"help": "Where the sweeps' runs go: local or slurm."})
    glue_dir: str | None = field(default=None, metadata={"help": "A GLUE-layout folder (unset: the hub)."})
    wikitext_dir: str | None = field(default=None, metadata={"help": "WikiText-2 train/test .txt (unset: the hub)."})
    gsm8k_dir: str | None = field(default=None, metadata={"help": "GSM8K train/test .jsonl (unset: the hub)."})
    flan_file: str | None = field(default=None, metadata={"help": "Flan-v2 JSONL (unset: the hub)."})
    mmlu_dir: str | None = field(default=None, metadata={"help": "MMLU, hendrycks layout (unset: the hub)."})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend: one of {', '.join(BACKENDS)}, got {self.backend!r}")

    def sweep_options(self) -> list[str]:
        """The options the sweep stages pass to `python -m lorakit.sweeps run`."""
        return ["--backend", self.backend, *(["--retry-failed"] if self.retry_failed else [])]

    def data(self) -> dict[str, Path | None]:
        """Each data option as an absolute path (a run's id must not depend on where it was started), or None; a
        path that does not exist is an error."""
        found = {}
        for option, flag in DATA_FLAGS.items():
            value = getattr(self, flag.removeprefix("--"))
            if value is not None and not Path(value).exists():
                raise ConfigError(f"{flag}: not found: {value}")
            found[option] = None if value is None else Path(value).resolve()
        return found


def prepare(argv: list[str]):
    (args,) = parse_args((ReproduceArguments,), argv)
    scale = load_scale(args.scale)
    stages, data = scale.select(args.stages), args.data()
    output_dir = Path(args.output_dir or Path("outputs") / "reproduce" / scale.name).resolve()
    output_dir = writable_dir(output_dir, "output_dir")
    for number, stage in enumerate(stages, 1):  # every stage's runs parse before the first one trains
        checked = check_stage(stage, output_dir, data)
        print(f"[{number}/{len(stages)}] {stage.name} ({stage.kind}): {checked}", flush=True)
    command = " ".join([NAME, *map(shlex.quote, argv)])
    return args, scale, stages, data, output_dir, command


def run(prepared) -> int:
    args, scale, stages, data, output_dir, command = prepared
    if args.dry_run:
        print(f"{len(stages)} stages valid; nothing was run")
        return 0
    failed = []
    for number, stage in enumerate(stages, 1):
        print(f"\n[{number}/{len(stages)}] {stage.name} ({stage.kind}) -> {output_dir / stage.name}", flush=True)
        if run_stage(stage, output_dir, data, args.sweep_options()) != 0:
            failed.append(stage.name)
    paths = write_report(scale, scale.stages, output_dir, command)
    for name, path in paths.items():
        print(f"{name}: {path}")
    if failed:
        print(f"{NAME}: some runs failed in {', '.join(failed)}; see each stage's status, then rerun with "
              "--retry_failed true", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(NAME, lambda: prepare(sys.argv[1:] if argv is None else argv), run)


if __name__ == "__main__":
    sys.exit(main())
