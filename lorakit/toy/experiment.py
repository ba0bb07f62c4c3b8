"""The toy sweep (§3) as a resumable experiment: train every width, keep the tables after each, report the optima,
the width exponents and the paper's claims (`run_toy.py` and `python -m lorakit.reproduce` call it)."""

import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from lorakit.core.atomic import write_csv_atomic, write_json_atomic
from lorakit.core.parsing import parse_args
from lorakit.core.run_folder import read_json_file, writable_dir
from lorakit.toy import analysis, figures
from lorakit.toy.arguments import ToyArguments
from lorakit.toy.train import Student, train_width
from lorakit.training.records import resolved_config

RESULTS, CURVES = "results.csv", "curves.csv"


def finished_widths(args: ToyArguments, output_dir: Path) -> tuple[list[dict], list[dict]]:
    """Rows of the widths that an earlier run in `output_dir` finished with the same settings (else nothing; tables
    that do not parse are set aside, with a line saying so)."""
    previous = read_json_file(output_dir / "run_config.json")
    if not (args.resume and isinstance(previous, dict) and (output_dir / RESULTS).exists()):
        return [], []
    if previous.get("settings") != args.settings():
        return [], []
    try:
        rows = pd.read_csv(output_dir / RESULTS).to_dict("records")
        curves = pd.read_csv(output_dir / CURVES).to_dict("records")
    except (OSError, ValueError, pd.errors.ParserError) as err:
        print(f"not resuming: the earlier tables in {output_dir} do not parse ({type(err).__name__}); starting over")
        return [], []
    if any(not {"width", "init", "lr", "seed"} <= set(row) for row in rows):
        print(f"not resuming: the earlier {RESULTS} in {output_dir} lacks columns; starting over")
        return [], []
    return rows, curves


def sweep(args: ToyArguments, output_dir: Path, rows: list[dict], curves: list[dict]):
    """Train every width not yet in `rows`, saving the tables after each one; returns the full tables."""
    config, lrs = args.toy_config(), args.learning_rates()
    students = [Student(init, lr, seed) for init in args.inits for lr in lrs for seed in args.seeds]
    done = {row["width"] for row in rows}
    todo = [w for w in args.widths if w not in done]
    if done:
        print(f"resuming: widths {sorted(done)} already finished in {output_dir}")
    columns = {"steps": config.steps, "rank": config.r, "loraplus_ratio": config.loraplus_ratio}
    work = tqdm(total=sum(w * len(students) * config.steps for w in todo), desc="toy sweep", unit="", unit_scale=True,
                disable=None)  # fmt: skip
    for width in todo:
        start, before = time.perf_counter(), work.n
        result = train_width(width, students, config, on_step=lambda active, w=width: work.update(w * active))
        work.update(before + width * len(students) * config.steps - work.n)
        rows += analysis.result_rows(result, columns)
        curves += analysis.curve_rows(result)
        write_csv_atomic(pd.DataFrame(rows), output_dir / RESULTS)
        write_csv_atomic(pd.DataFrame(curves), output_dir / CURVES)
        unstable = int((result.diverged_at >= 0).sum())
        tqdm.write(f"width {width}: {time.perf_counter() - start:.1f} s, {unstable}/{len(students)} students unstable")
    work.close()
    table = pd.DataFrame(rows)
    return table[table["width"].isin(args.widths)], pd.DataFrame(curves)


def report(args: ToyArguments, table: pd.DataFrame, curves: pd.DataFrame, output_dir: Path) -> pd.DataFrame:
    summary = analysis.lr_summary(table)
    best = analysis.optima(summary)
    write_csv_atomic(best, output_dir / "optima.csv")
    print(best.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    exponents = analysis.width_exponents(best)
    print(exponents.to_string(index=False, float_format=lambda v: f"{v:+.2f}"))
    checks = pd.DataFrame()
    if best["width"].nunique() > 1 and args.loraplus_ratio == 1 and set(args.inits) >= {"A", "B"}:
        checks = analysis.claim_checks(best)
    elif best["width"].nunique() > 1 and args.loraplus_ratio != 1 and "A" in args.inits:
        checks = analysis.loraplus_check(best, args.loraplus_ratio)
    if len(checks):
        write_csv_atomic(checks, output_dir / "checks.csv")
        print(checks.to_string(index=False))
    if args.figures:
        title = f"toy model, r = {args.rank}, {args.steps} Adam steps, LoRA+ ratio {args.loraplus_ratio:g}"
        figures.loss_vs_lr(summary, best, output_dir / "loss_vs_lr.png", title)
        figures.optimal_lr_vs_width(best, output_dir / "optimal_lr_vs_width.png", title)
        figures.feature_norms(curves, best, output_dir / "feature_norms.png", title)
    return checks


def prepare(argv: list[str]) -> tuple[ToyArguments, Path]:
    (args,) = parse_args((ToyArguments,), argv)
    args.validate()
    return args, writable_dir(Path(args.output_dir or args.default_output_dir()), "output_dir")


def run(prepared: tuple[ToyArguments, Path]) -> int:
    args, output_dir = prepared
    start = time.perf_counter()
    rows, curves = finished_widths(args, output_dir)
    if not rows:  # tables from other settings must not be mistaken for this run's if it dies before a width ends
        for name in (RESULTS, CURVES):
            (output_dir / name).unlink(missing_ok=True)
    extra = {"settings": args.settings(), "learning_rates": args.learning_rates()}
    write_json_atomic(output_dir / "run_config.json", resolved_config({"toy": args}, extra))
    table, curves = sweep(args, output_dir, rows, curves)
    report(args, table, curves, output_dir)
    print(f"done in {time.perf_counter() - start:.1f} s -> {output_dir}")
    return 0
