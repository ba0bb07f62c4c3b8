"""The reproduction's report, from the stages' own outputs alone: ``claims.csv`` (a row per claim and stage: its
verdict, each init's value, the seeds' spread and what it rests on), ``reproduction.png`` (each sweep stage's metric
and RMS Z_A against learning rate, per init) and ``report.md``, which links every stage's own tables and figures."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lorakit.core.atomic import replace_atomically, write_csv_atomic  # noqa: E402
from lorakit.core.errors import ConfigError  # noqa: E402
from lorakit.core.run_folder import read_json_file  # noqa: E402
from lorakit.reproduce.claims import FAIL, NA, PASS, direction, judge_claims  # noqa: E402
from lorakit.reproduce.runs import claims_runs, learned_rule  # noqa: E402
from lorakit.reproduce.scale import Scale, Stage  # noqa: E402
from lorakit.reproduce.stages import LONGER, STAGE_RECORD, SWEEP_FILE, best_lrs, read_timings  # noqa: E402
from lorakit.sweeps.report import COLOURS, with_defaults  # noqa: E402
from lorakit.sweeps.spec import fixed_values, load_sweep  # noqa: E402

COLUMNS = ["stage", "claim", "verdict", "init_a", "init_b", "spread", "detail"]
VERDICTS = {"pass": PASS, "fail": FAIL, "true": PASS, "false": FAIL}  # the toy's and the width check's results
FINISHED = ("done", "diverged", "failed")


def undecided(stage: Stage, why: str) -> pd.DataFrame:
    return pd.DataFrame([{"stage": stage.name, "claim": "every claim of the stage", "verdict": NA, "detail": why}])


def sweep_claims(stage: Stage, folder: Path) -> pd.DataFrame:
    """The claims on the stage's runs, once every run has finished (a stage part-way through is UNDECIDED: its grid
    is not the one the claims are about)."""
    if not (folder / SWEEP_FILE).exists() or not (folder / "results.csv").exists():
        return undecided(stage, "not run yet")
    sweep = load_sweep(folder / SWEEP_FILE)
    results = pd.read_csv(folder / "results.csv")
    total, finished = len(sweep.points()), int(results["status"].isin(FINISHED).sum()) if len(results) else 0
    if finished < total:
        return undecided(stage, f"{finished} of {total} runs finished; run the same command again to finish")
    try:
        rule = learned_rule(sweep, stage.chance)
        runs = claims_runs(with_defaults(results, fixed_values(sweep), list(sweep.grid)), rule)
        table = judge_claims(runs, tie=float(stage.tie), higher_is_better=sweep.higher_is_better)
    except ConfigError as err:
        return undecided(stage, str(err))
    failed = int(results["status"].eq("failed").sum())
    detail = f"{sweep.metric}; learned: {rule}" + (f"; {failed} failed runs count as not learning" if failed else "")
    table = table.assign(stage=stage.name, detail=detail)
    if stage.longer:
        table = pd.concat([table, pd.DataFrame([longer_claim(stage, folder, runs, sweep)])], ignore_index=True)
    return table


def longer_claim(stage: Stage, folder: Path, runs: pd.DataFrame, sweep) -> dict:
    """Whether the best runs had stopped improving: each init's best lr trained longer (its first seed) against the
    same run in the stage; PASS when neither gains more than `tie`, FAIL when one does."""
    gains, notes = {}, []
    for init, lr in best_lrs(folder).items():
        path = folder / f"{LONGER}{init}" / "results.csv"
        longer = pd.read_csv(path) if path.exists() else pd.DataFrame()
        done = longer[longer["status"] == "done"] if "status" in longer else longer
        if done.empty or f"final_{sweep.metric}" not in done:
            continue
        seed = done["seed"].iloc[0]
        at = runs["lr"].map(lambda v: float(f"{v:.6g}")) == float(f"{lr:.6g}")
        mine = runs[(runs["init"] == init) & at & (runs["seed"] == seed)]
        gain = (float(done[f"final_{sweep.metric}"].iloc[0]) - float(mine["metric"].mean())) * direction(
            sweep.higher_is_better
        )
        gains[init] = gain
        notes.append(f"Init[{init}] at lr {lr:g}, seed {seed}: {gain:+.4g}")
    claim = f"best runs stopped improving: {stage.longer} gains ≤ {stage.tie:g}"
    if set(gains) != {"A", "B"} or any(np.isnan(g) for g in gains.values()):
        verdict = NA
    else:
        verdict = FAIL if max(gains.values()) > stage.tie else PASS
    detail = "; ".join(notes) or "the longer runs have not finished"
    return {"stage": stage.name, "claim": claim, "verdict": verdict, "init_a": gains.get("A", np.nan),
            "init_b": gains.get("B", np.nan), "detail": detail}  # fmt: skip


def verdict(value) -> str:
    return VERDICTS.get(str(value).strip().lower(), NA)


def toy_claims(stage: Stage, folder: Path) -> pd.DataFrame:
    if not (folder / "checks.csv").exists():
        return undecided(stage, "not run yet, or its claims not measured (they need both inits, several widths)")
    rows = [
        {"stage": stage.name, "claim": row["claim"], "verdict": verdict(row["pass"]),
         "detail": f"measured {row['measured']}, target {row['target']}"}
        for row in pd.read_csv(folder / "checks.csv").to_dict("records")
    ]  # fmt: skip
    return pd.DataFrame(rows)


def widthcheck_claims(stage: Stage, folder: Path) -> pd.DataFrame:
    """The width check's judged exponents (the rows it only reports, limits of the theory, are left out)."""
    if not (folder / "judged.csv").exists():
        return undecided(stage, "not run yet")
    judged = pd.read_csv(folder / "judged.csv")
    rows = [
        {"stage": stage.name, "verdict": verdict(row["result"]),
         "claim": f"{row['arch']} {row['scheme']}, lr {row['lr']}: {row['quantity']} ~ n^{row['predicted']:+g}",
         "detail": f"measured exponent {row['measured']:+.2f} at step {row['at']}"}
        for row in judged.to_dict("records") if not str(row["result"]).startswith("reported")
    ]  # fmt: skip
    return pd.DataFrame(rows)


def all_claims(stages: list[Stage], output_dir: Path) -> pd.DataFrame:
    judge = {"toy": toy_claims, "widthcheck": widthcheck_claims, "sweep": sweep_claims}
    parts = [judge[s.kind](s, output_dir / s.name) for s in stages]
    return pd.concat([p for p in parts if len(p)], ignore_index=True).reindex(columns=COLUMNS)


def plot_main(stages: list[Stage], output_dir: Path, path: Path) -> Path | None:
    """Each sweep stage's metric (mean ± std over seeds, from its summary.csv) and RMS Z_A at the last measured step
    (its dynamics.csv) against learning rate, one curve per init: the paper's two figures, for every real model."""
    found = [s for s in stages if s.kind == "sweep" and (output_dir / s.name / "summary.csv").exists()]
    if not found:
        return None
    fig, axes = plt.subplots(2, len(found), figsize=(4.2 * len(found), 6.4), squeeze=False)
    for column, stage in enumerate(found):
        folder = output_dir / stage.name
        summary = pd.read_csv(folder / "summary.csv")
        dynamics = pd.read_csv(folder / "dynamics.csv") if (folder / "dynamics.csv").exists() else None
        for init, part in summary.groupby(summary["lora_init"].astype(str)):
            axes[0, column].errorbar(part["learning_rate"], part["mean"], yerr=part["std"].fillna(0), marker="o",
                                     ms=4, capsize=3, color=COLOURS.get(init), label=f"Init[{init}]")  # fmt: skip
            if dynamics is not None:
                mine = dynamics[dynamics["lora_init"].astype(str) == init]
                axes[1, column].plot(mine["learning_rate"], mine["diag_rms_z_a"], marker="o", ms=4,
                                     color=COLOURS.get(init))  # fmt: skip
        metric = load_sweep(folder / SWEEP_FILE).metric
        axes[0, column].set(xscale="log", title=stage.name, ylabel=metric)
        axes[1, column].set(xscale="log", yscale="log", xlabel="learning rate", ylabel="RMS Z_A (last step)")
        for ax in axes[:, column]:
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Init[A] vs Init[B] on real models: final metric (mean ± std over seeds) and RMS Z_A", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return "" if np.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def stage_section(stage: Stage, output_dir: Path) -> list[str]:
    folder = output_dir / stage.name
    record = read_json_file(folder / STAGE_RECORD) or {}
    lines = [f"### {stage.name} ({stage.kind})", ""]
    if record.get("data"):
        lines += [f"Data: {record['data']}.", ""]
    if (folder / "summary.csv").exists():
        lines += [markdown_table(pd.read_csv(folder / "summary.csv")), ""]
    figures = sorted(p.name for p in folder.glob("*.png"))
    lines += [f"![{name}]({stage.name}/{name})" for name in figures] + [""]
    return lines


def write_report(scale: Scale, stages: list[Stage], output_dir: Path, command: str) -> dict[str, Path]:
    """claims.csv, reproduction.png and report.md in `output_dir`; returns their paths."""
    claims = all_claims(stages, output_dir)
    paths = {"claims": output_dir / "claims.csv", "report": output_dir / "report.md"}
    write_csv_atomic(claims, paths["claims"])
    figure = plot_main(stages, output_dir, output_dir / "reproduction.png")
    timings = read_timings(output_dir)
    total = sum(timings.get(s.name, 0.0) for s in stages)
    lines = [f"# Reproduction, scale {scale.name}", "", f"`{command}` (scale file {scale.path.name}).", ""]
    names = [s.name for s in stages]
    minutes = pd.DataFrame({"stage": names, "minutes": [timings.get(name, 0) / 60 for name in names]})
    lines += [f"Wall time: {total / 60:.1f} min, summed over every invocation (a killed one's time included):", ""]
    lines += [markdown_table(minutes), ""]
    counts = claims["verdict"].value_counts()
    lines += ["## Claims", "", ", ".join(f"{counts.get(v, 0)} {v}" for v in (PASS, "TIE", FAIL, NA)) + ".", ""]
    lines += [markdown_table(claims), ""]
    if figure is not None:
        paths["figure"] = figure
        lines += [f"![main figure]({figure.name})", ""]
    lines += ["## Stages", ""] + [line for s in stages for line in stage_section(s, output_dir)]
    text = "\n".join(lines)
    replace_atomically(paths["report"], lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return paths
