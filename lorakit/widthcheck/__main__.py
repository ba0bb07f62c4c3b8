"""The width (coordinate) check, as mup's coordinate check but for LoRA's dynamics:

    python -m lorakit.widthcheck                                   # the default check: about 5 min on 2 CPU cores
    python -m lorakit.widthcheck --archs bert --widths 128 256 512 --seeds 1 --rank_sweep false   # a quick look
    python -m lorakit.widthcheck --convention alpha_over_sqrt_r    # rsLoRA's α/√r

Random-weight BERT- and Llama-style models at each width, LoRA on the attention projections, Init[A] and Init[B], Adam
at η = c·n^-1/2 and c·n^-1 on one fixed batch of real text; every step measured in every LoRA layer. Writes into
--output_dir: results.csv (a row per setting × seed × step × layer), exponents.csv (against width, per step, the
layer mean and each layer), judged.csv (the theory's table with pass/fail), crossover.csv, rank_exponents.csv,
run_config.json and the figures widthcheck_<arch>.png and rank_<arch>.png; prints the tables and the wall time.
Each finished group (architecture × width × seed) is kept in results.csv, so a rerun of a killed command resumes;
a rerun with other settings reuses the groups whose numbers they do not change, and nothing else.
"""

import sys
import time
from pathlib import Path

import pandas as pd

from lorakit.core.atomic import write_csv_atomic, write_json_atomic
from lorakit.core.parsing import parse_args
from lorakit.core.run_folder import read_json_file, writable_dir
from lorakit.training.command import run_command
from lorakit.training.records import resolved_config
from lorakit.widthcheck import fit
from lorakit.widthcheck.arguments import CONVENTIONS, WidthCheckArguments
from lorakit.widthcheck.figures import plot_against, shown_steps
from lorakit.widthcheck.models import make_batch
from lorakit.widthcheck.run import rank_settings, run_group, width_settings

RESULTS = "results.csv"
NAME = "python -m lorakit.widthcheck"


FIGURES = ("widthcheck_*.png", "rank_*.png")
TABLES = ("exponents.csv", "judged.csv", "crossover.csv", "rank_exponents.csv")
KINDS = ("width", "rank")


def settings(args: WidthCheckArguments, batches: dict) -> dict:
    """What decides a group's numbers beyond its name: per kind of group, the arguments that do; per architecture,
    its batch (a digest)."""
    return {"kinds": {kind: args.settings(kind) for kind in KINDS},
            "batches": {arch: batch.digest() for arch, batch in batches.items()}}  # fmt: skip


def finished_rows(args: WidthCheckArguments, output_dir: Path, batches: dict) -> list[dict]:
    """Rows of this run's groups that an earlier run in `output_dir` finished with equal settings and batches."""
    previous = read_json_file(output_dir / "run_config.json")
    before = previous.get("settings") if isinstance(previous, dict) else None
    if not (args.resume and isinstance(before, dict) and isinstance(before.get("kinds"), dict)):
        return []
    now = settings(args, batches)
    kinds = {kind for kind in KINDS if before["kinds"].get(kind) == now["kinds"][kind]}
    archs = {arch for arch, digest in now["batches"].items() if before.get("batches", {}).get(arch) == digest}
    try:
        rows = pd.read_csv(output_dir / RESULTS).to_dict("records")
    except (OSError, ValueError, pd.errors.ParserError):
        return []
    wanted = {name for name, _, _ in groups(args)}
    return [r for r in rows if r.get("group") in wanted and r["group"].split()[0] in kinds and r["arch"] in archs]


def clear_outputs(output_dir: Path, rows: list[dict]) -> None:
    """Leave only what this run stands behind: the kept rows, and no table or figure of an earlier run."""
    if rows:
        write_csv_atomic(pd.DataFrame(rows), output_dir / RESULTS)
    else:
        (output_dir / RESULTS).unlink(missing_ok=True)
    for path in [*(output_dir / name for name in TABLES), *(p for g in FIGURES for p in output_dir.glob(g))]:
        path.unlink(missing_ok=True)


def groups(args: WidthCheckArguments) -> list[tuple[str, tuple, list]]:
    """(name, base key, settings) of every group: the width check's, then the rank sweep's."""
    found = [(f"width {a} n={w} seed {s}", (a, w, s), group) for (a, w, s), group in width_settings(args)]
    if args.rank_sweep:
        found += [(f"rank {a} n={w} seed {s}", (a, w, s), group) for (a, w, s), group in rank_settings(args)]
    return found


def measure(args: WidthCheckArguments, output_dir: Path, batches: dict, rows: list[dict]) -> pd.DataFrame:
    """Run every group not yet in `rows`, saving results.csv after each; returns every row."""
    done = {row["group"] for row in rows}
    todo = [g for g in groups(args) if g[0] not in done]
    if done:
        print(f"resuming: {len(done)} groups already finished in {output_dir}")
    for number, (name, key, settings) in enumerate(todo, 1):
        start = time.perf_counter()
        rows += [{"group": name, **row} for row in run_group(key, settings, args, batches)]
        write_csv_atomic(pd.DataFrame(rows), output_dir / RESULTS)
        print(f"[{number}/{len(todo)}] {name}: {len(settings)} settings in {time.perf_counter() - start:.1f} s")
    return pd.DataFrame(rows)


def short_layer(name: str) -> str:
    """bert.encoder.layer.0.attention.self.query → 0.attention.self.query (the block index and the path in it)."""
    parts = name.split(".")
    at = next((i for i, part in enumerate(parts) if part.isdigit()), 0)
    return ".".join(parts[at:])


def per_layer(exps: pd.DataFrame, arch: str) -> pd.DataFrame:
    """Each layer's exponent of every judged quantity at its judged step (the last, for those judged at each step)."""
    mine = exps[(exps["arch"] == arch) & (exps["layer"] != fit.LAYER_MEAN)]
    last, columns = int(mine["step"].max()), {}
    for p in (p for p in fit.PREDICTIONS if p.judged):
        step = 2 if p.at == "step 2" else last
        part = mine[(mine["scheme"] == p.scheme) & (mine["lr_scaling"] == p.lr_scaling) & (mine["step"] == step)]
        label = (f"{p.scheme} {p.lr_scaling} @{step}", fit.QUANTITIES[p.quantity])
        columns[label] = part.set_index(part["layer"].map(short_layer))[p.quantity]
    return pd.DataFrame(columns)


def print_table(title: str, table: pd.DataFrame, signed: bool = True) -> None:
    print(f"\n{title}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:+.2f}" if signed else f"{v:.3g}", na_rep="—"))


def report(args: WidthCheckArguments, results: pd.DataFrame, output_dir: Path) -> pd.DataFrame:
    widths = results[results["group"].str.startswith("width")]
    exps = fit.width_exponents(widths)
    judged = fit.judge(exps, args.tolerance)
    crossing = fit.crossover(widths)
    write_csv_atomic(exps, output_dir / "exponents.csv")
    write_csv_atomic(judged, output_dir / "judged.csv")
    write_csv_atomic(crossing, output_dir / "crossover.csv")
    overall = exps[exps["layer"] == fit.LAYER_MEAN].drop(columns="layer").rename(columns=fit.QUANTITIES)
    steps = shown_steps(sorted(overall["step"].unique()))
    print_table(f"Exponents against width n (mean of layers and seeds) at steps {', '.join(map(str, steps))} (every "
                "step: exponents.csv):", overall[overall["step"].isin(steps)])  # fmt: skip
    for arch in args.archs:
        print(f"\nPer-layer exponents of the judged quantities, {arch}:")
        print(per_layer(exps, arch).to_string(float_format=lambda v: f"{v:+.2f}", na_rep="—"))
    at = crossing.assign(at=crossing["overtakes at step"].map(lambda s: "never" if pd.isna(s) else f"step {s:.0f}"))
    print_table("Init[A]: the step at which (A_t−A_0)·x overtakes A_0·x (internal instability begins):",
                at.drop(columns="overtakes at step"), signed=False)  # fmt: skip
    if args.rank_sweep:
        ranks = fit.rank_exponents(results[results["group"].str.startswith("rank")])
        write_csv_atomic(ranks, output_dir / "rank_exponents.csv")
        print_table(f"Exponents against rank r at n = {args.rank_width}, last step (not judged):",
                    ranks.rename(columns=fit.QUANTITIES))  # fmt: skip
    draw(args, results, output_dir)
    print_table(f"The theory's exponents against n, judged within ±{args.tolerance:g}:", judged)
    return judged


def draw(args: WidthCheckArguments, results: pd.DataFrame, output_dir: Path) -> None:
    what = f"r = {args.rank}, {CONVENTIONS[args.convention]}, c = {args.c:g}, {args.seeds} seeds"
    for arch in args.archs:
        mine = results[results["arch"] == arch]
        widths = fit.means(mine[mine["group"].str.startswith("width")], "width")
        plot_against(widths, "width", output_dir / f"widthcheck_{arch}.png", f"{arch}: RMS against width ({what})")
        if args.rank_sweep:
            ranks = fit.means(mine[mine["group"].str.startswith("rank")], "rank")
            title = f"{arch}: RMS against rank at n = {args.rank_width} ({CONVENTIONS[args.convention]})"
            plot_against(ranks, "rank", output_dir / f"rank_{arch}.png", title)


def explain(judged: pd.DataFrame) -> None:
    """One line per judged exponent outside the tolerance."""
    misses = judged[judged["result"] == "FAIL"]
    for miss in misses.itertuples():
        where = f"{miss.arch} {miss.scheme} η {miss.lr} ({miss.at}) {miss.quantity}"
        print(f"MISS: {where}: measured {miss.measured:+.2f}, predicted {miss.predicted:+.2f}")
    if len(misses):
        print("Why a judged exponent can miss: README, 'The width check on transformer architectures'.")


def prepare(argv: list[str]):
    (args,) = parse_args((WidthCheckArguments,), argv)
    output_dir = writable_dir(Path(args.output_dir), "output_dir")
    batches = {arch: make_batch(arch, args.text, args.batch, args.tokens) for arch in args.archs}
    return args, output_dir, batches


def run(prepared) -> int:
    args, output_dir, batches = prepared
    start = time.perf_counter()
    rows = finished_rows(args, output_dir, batches)
    clear_outputs(output_dir, rows)  # nothing of other settings may pass for this run's if it dies before the end
    sources = {arch: batch.source for arch, batch in batches.items()}
    extra = {"settings": settings(args, batches), "scaling": CONVENTIONS[args.convention], "batch_text": sources}
    write_json_atomic(output_dir / "run_config.json", resolved_config({"widthcheck": args}, extra))
    judged = report(args, measure(args, output_dir, batches, rows), output_dir)
    explain(judged)
    print(f"\ndone in {time.perf_counter() - start:.1f} s -> {output_dir}")
    return 0


def main(argv: list[str]) -> int:
    return run_command(NAME, lambda: prepare(argv), run)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
