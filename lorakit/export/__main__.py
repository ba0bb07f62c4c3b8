"""python -m lorakit.export <run_dir> --merge: a finished run's adapter merged into its base, as a plain HF model

    python -m lorakit.export outputs/movie_reviews/<run> --merge                   # -> <run>-merged/
    python -m lorakit.export outputs/shakespeare/<run> --merge --output_dir smollm2-shakespeare

Writes the base with BA added to its weights (and the head the run trained) in HF format, with the tokenizer, into
--output_dir (default <run_dir>-merged, beside the run, so that a push of the run's folder never uploads it): what
vLLM, TGI or lm-evaluation-harness load as a model of its own. The base is loaded unquantized in float32, merged, and
saved in the run's torch_dtype (a run on a 4-bit base merges into its full-precision weights, so the merged model
differs from the quantized one the adapter was trained on by the quantization error). Runs whose init scheme changed
the base weights (PEFT's pissa, olora, corda, eva, loftq) are refused: their adapter does not merge into the base.
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from lorakit.core.errors import ConfigError
from lorakit.core.parsing import parse_args
from lorakit.core.run_folder import read_json_file, writable_dir
from lorakit.export.merge import merge_run
from lorakit.training.command import run_command

NAME = "python -m lorakit.export"
BASE_CHANGING = ("pissa", "olora", "corda", "eva", "loftq")  # PEFT's inits that rewrite W as well as A and B


@dataclass
class ExportArguments:
    run_dir: str = field(metadata={"help": "A finished run's folder (its adapter, run_config.json, metrics.json)."})
    merge: bool = field(default=False, metadata={"help": "Merge the adapter into the base (the one export so far)."})
    output_dir: str | None = field(default=None, metadata={"help": "Where the model goes (default <run_dir>-merged)."})


def prepare(argv: list[str]):
    if argv and not argv[0].startswith("-"):  # the run folder comes first, as the usage line shows
        argv = ["--run_dir", *argv]
    (args,) = parse_args((ExportArguments,), argv)
    if not args.merge:
        raise ConfigError("merge: say --merge (a merged model is the one export there is)")
    run_dir = Path(args.run_dir)
    metrics = read_json_file(run_dir / "metrics.json")
    if not isinstance(metrics, dict) or metrics.get("status") != "done":
        found = metrics.get("status") if isinstance(metrics, dict) else "no readable metrics.json"
        raise ConfigError(f"run_dir: {run_dir} is not a finished run ({found})")
    for name in ("adapter_config.json", "run_config.json"):
        if not (run_dir / name).is_file():
            raise ConfigError(f"run_dir: {run_dir} has no {name}")
    scheme = str(((read_json_file(run_dir / "run_config.json") or {}).get("init") or {}).get("scheme", ""))
    if scheme.lower().startswith(BASE_CHANGING):
        raise ConfigError(
            f"run_dir: init scheme {scheme} changed the base weights; its adapter does not merge into it"
        )
    default = run_dir.parent / f"{run_dir.name}-merged"
    return run_dir, writable_dir(Path(args.output_dir or default), "output_dir")


def run(prepared) -> int:
    run_dir, output_dir = prepared
    merge_run(run_dir, output_dir)
    print(f"merged: {run_dir} -> {output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_command(NAME, lambda: prepare(sys.argv[1:] if argv is None else argv), run)


if __name__ == "__main__":
    sys.exit(main())
