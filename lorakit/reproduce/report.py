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
from lorakit.reproduce.claims import FAIL, NA, PASS, judge_claims  # noqa: E402
from lorakit.reproduce.scale import Scale, Stage  # noqa: E402
from lorakit.reproduce.stages import STAGE_RECORD, read_timings  # noqa: E402
from lorakit.sweeps.report import COLOURS  # noqa: E402
from lorakit.tasks.glue.catalog import GLUE_TASKS  # noqa: E402

CHANCE_MARGIN = 0.05  # a classifier learned when its accuracy is 5 points above chance (1 / number of labels)
DIAGNOSTICS = ("rms_z_a", "rms_a0_x", "rms_update_x", "rms_delta1", "rms_delta2")
COLUMNS = ["stage", "claim", "verdict", "init_a", "init_b", "spread", "detail"]
VERDICTS = {"pass": PASS, "fail": FAIL, True: PASS, False: FAIL}


def learned(results: pd.DataFrame, metric: str, higher_is_better: bool, task_name: str | None) -> tuple:
    """Whether each run learned, and the rule used: its metric beat the one measured before training where the runs
    record one (the LM task: loss below its start), else a classifier's accuracy beat chance by `CHANCE_MARGIN`."""
    final = pd.to_numeric(results.get(f"final_{metric}"), errors="coerce")
    before = results.get(f"before_{metric}")
    if before is not None:
        before = pd.to_numeric(before, errors="coerce")
        return (final > before) if higher_is_better else (final < before), f"{metric} better than before training"
    task = GLUE_TASKS.get(task_name or "")
    if task is None or task.is_regression:
        raise ConfigError(f"no rule for whether a run of {task_name!r} learned: its runs record no before_{metric}")
    chance = 1 / task.num_labels + CHANCE_MARGIN
    return final > chance, f"{metric} > {chance:.3g} (chance + {CHANCE_MARGIN:g})"


def claims_runs(results: pd.DataFrame, metric: str, higher_is_better: bool, task_name: str | None) -> tuple:
    """A sweep's results.csv as the claims' runs table (done and diverged runs; failed ones are left out, not counted
    as not learning) and the learned rule."""
    finished = results[results["status"].isin(["done", "diverged"])].reset_index(drop=True)
    ok, rule = learned(finished, metric, higher_is_better, task_name)
    done = finished["status"].eq("done")
    runs = pd.DataFrame({
        "init": finished["lora_init"].astype(str),
        "lr": finished["learning_rate"].astype(float),
        "seed": finished["seed"],
        "metric": pd.to_numeric(finished[f"final_{metric}"], errors="coerce").where(done),
        "learned": (ok & done).astype(bool),
    })  # fmt: skip
    for name in DIAGNOSTICS:
        runs[name] = pd.to_numeric(finished.get(f"diag_{name}", np.nan), errors="coerce")
    return runs, rule


def sweep_claims(stage: Stage, folder: Path) -> pd.DataFrame:
    sweep = read_json_file(folder / "sweep.json") or {}
    results = pd.read_csv(folder / "results.csv") if (folder / "results.csv").exists() else pd.DataFrame()
    if results.empty or not {"lora_init", "learning_rate", "seed"} <= set(results):
        return pd.DataFrame([{"stage": stage.name, "claim": "every claim", "verdict": NA, "detail": "no results"}])
    metric, higher = sweep.get("metric", stage.sweep.get("metric")), sweep.get("higher_is_better", True)
    task_name = (stage.sweep.get("base") or {}).get("task_name")
    runs, rule = claims_runs(results, metric, higher, task_name)
    failed = int(results["status"].eq("failed").sum())
    detail = f"{metric}; learned: {rule}" + (f"; {failed} failed runs left out" if failed else "")
    table = judge_claims(runs, tie=float(stage.tie), higher_is_better=higher)
    return table.assign(stage=stage.name, detail=detail)


def toy_claims(stage: Stage, folder: Path) -> pd.DataFrame:
    checks = pd.read_csv(folder / "checks.csv") if (folder / "checks.csv").exists() else pd.DataFrame()
    rows = [
        {"stage": stage.name, "claim": row["claim"], "verdict": VERDICTS.get(row["pass"], NA),
         "detail": f"measured {row['measured']}, target {row['target']}"}
        for row in checks.to_dict("records")
    ]  # fmt: skip
    return pd.DataFrame(rows)


def widthcheck_claims(stage: Stage, folder: Path) -> pd.DataFrame:
    judged = pd.read_csv(folder / "judged.csv") if (folder / "judged.csv").exists() else pd.DataFrame()
    rows = [
        {"stage": stage.name, "verdict": VERDICTS.get(row["result"], NA),
         "claim": f"{row['arch']} {row['scheme']}, lr {row['lr']}: {row['quantity']} ~ n^{row['predicted']:+g}",
         "detail": f"measured exponent {row['measured']:+.2f} at step {row['at']}"}
        for row in judged.to_dict("records")
    ]  # fmt: skip
    return pd.DataFrame(rows)


def all_claims(stages: list[Stage], output_dir: Path) -> pd.DataFrame:
    judge = {"toy": toy_claims, "widthcheck": widthcheck_claims, "sweep": sweep_claims}
    parts = [judge[s.kind](s, output_dir / s.name) for s in stages if (output_dir / s.name).is_dir()]
    table = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    return (pd.DataFrame(columns=COLUMNS) if table is None else table).reindex(columns=COLUMNS)


def plot_main(stages: list[Stage], output_dir: Path, path: Path) -> Path | None:
    """Each sweep stage's metric (mean ± std over seeds, done runs) and RMS Z_A at the last measured step against
    learning rate, one curve per init: the paper's two figures side by side, for every real model."""
    found = [(s, pd.read_csv(output_dir / s.name / "results.csv")) for s in stages
             if s.kind == "sweep" and (output_dir / s.name / "results.csv").exists()]  # fmt: skip
    found = [(s, r[r["status"] == "done"]) for s, r in found if "status" in r and r["status"].eq("done").any()]
    if not found:
        return None
    fig, axes = plt.subplots(2, len(found), figsize=(4.2 * len(found), 6.4), squeeze=False)
    for column, (stage, done) in enumerate(found):
        metric = (read_json_file(output_dir / stage.name / "sweep.json") or {}).get("metric", "metric")
        for init, runs in done.groupby(done["lora_init"].astype(str)):
            values = pd.to_numeric(runs[f"final_{metric}"], errors="coerce").groupby(runs["learning_rate"])
            mean, std = values.mean(), values.std().fillna(0)
            axes[0, column].errorbar(mean.index, mean.values, yerr=std.values, marker="o", ms=4, capsize=3,
                                     color=COLOURS.get(init), label=f"Init[{init}]")  # fmt: skip
            if "diag_rms_z_a" in runs:
                z_a = pd.to_numeric(runs["diag_rms_z_a"], errors="coerce").groupby(runs["learning_rate"]).mean()
                axes[1, column].plot(z_a.index, z_a.values, marker="o", ms=4, color=COLOURS.get(init))
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
