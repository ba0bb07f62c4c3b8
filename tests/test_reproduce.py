"""`python -m lorakit.reproduce`: the shipped scales parse (the paper's through every runner's own parser), a tiny
scale killed at several points finishes on rerun without repeating a finished run, a sweep's results become the
claims' runs table, GLUE folders without a train split are read from their dev split, and bad input is one line."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from lorakit.core.errors import ConfigError
from lorakit.reproduce.__main__ import main
from lorakit.reproduce.report import all_claims
from lorakit.reproduce.runs import LearnedRule, claims_runs, learned_rule
from lorakit.reproduce.scale import SHIPPED, Stage, glue_source, load_scale, scale_file
from lorakit.reproduce.stages import check_stage, longer_mapping, sweep_mapping, write_sweep_file
from lorakit.sweeps.spec import load_sweep

PROJECT = Path(__file__).resolve().parents[1]
TEXT = "the film was a quiet delight and the actors gave it all they had, " * 20


def tiny_scale(folder: Path, tiny_bert_dir: Path) -> Path:
    (folder / "text.txt").write_text(TEXT)
    stages = [
        {"name": "toy", "kind": "toy", "settings": {"widths": [16, 32], "lrs": [1e-3, 1e-2, 1e-1], "seeds": [0],
                                                    "steps": 10, "n_train": 16, "figures": False}},
        {"name": "widthcheck", "kind": "widthcheck", "settings": {
            "archs": ["bert"], "widths": [64, 128], "head_size": 32, "layers": 1, "seeds": 1, "steps": 3, "rank": 4,
            "rank_sweep": False, "text": str(folder / "text.txt")}},
        {"name": "glue_tiny", "kind": "sweep", "data": ["glue"], "tie": 0.003, "longer": {"max_steps": 8}, "sweep": {
            "task": "glue",
            "base": {"model_name_or_path": str(tiny_bert_dir), "task_name": "sst2", "max_steps": 4,
                     "per_device_train_batch_size": 8, "lora_diagnostics_steps": 2},
            "grid": {"learning_rate": [1e-3, 1e-2], "lora_init": ["A", "B"], "seed": [0, 1]},
            "pack": 4, "local": {"workers": 1}}},
    ]  # fmt: skip
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "stages": stages}))
    return path


def start(argv: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT)}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "lorakit.reproduce", *argv], cwd=PROJECT, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def kill_when(proc: subprocess.Popen, ready, seconds: float = 240) -> None:
    """SIGKILL the command and every process it started (a machine going down) once `ready()` holds."""
    deadline = time.time() + seconds
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def done_runs(out: Path) -> dict[Path, float]:
    """Each finished sweep run's folder (of the glue_tiny stage, or of `out` itself) → its metrics.json's
    modification time."""
    found = {}
    for metrics in [*out.glob("glue_tiny/runs/*/metrics.json"), *out.glob("runs/*/metrics.json")]:
        if json.loads(metrics.read_text()).get("status") in ("done", "diverged"):
            found[metrics.parent] = metrics.stat().st_mtime
    return found


def test_a_tiny_scale_killed_at_several_points_finishes_on_rerun_repeating_no_finished_run(
    tmp_path, tiny_bert_dir, tiny_glue_dir
):
    out = tmp_path / "out"
    argv = ["--scale", str(tiny_scale(tmp_path, tiny_bert_dir)), "--output_dir", str(out)]
    argv += ["--glue_dir", str(tiny_glue_dir)]
    kill_when(start(argv, tmp_path / "1.log"), lambda: (out / "widthcheck" / "results.csv").exists())
    toy_rows = len(pd.read_csv(out / "toy" / "results.csv"))
    kill_when(start(argv, tmp_path / "2.log"), lambda: len(done_runs(out)) > 0)
    finished = done_runs(out)
    assert 0 < len(finished) < 8  # killed part-way through the sweep stage
    assert "resuming: widths [16, 32] already finished" in (tmp_path / "2.log").read_text()
    last = start(argv, tmp_path / "3.log")
    assert last.wait(timeout=300) == 0, (tmp_path / "3.log").read_text()[-3000:]
    log = (tmp_path / "3.log").read_text()
    assert "resuming: widths [16, 32] already finished" in log and "resuming: 2 groups already finished" in log
    assert len(pd.read_csv(out / "toy" / "results.csv")) == toy_rows
    after = done_runs(out)
    assert len(after) == 8
    for run_dir, mtime in finished.items():  # finished before the kill: never run again
        assert after[run_dir] == mtime
        assert len(json.loads((run_dir / "attempts.json").read_text())) == 1
    claims = pd.read_csv(out / "claims.csv")
    assert set(claims["stage"]) == {"toy", "widthcheck", "glue_tiny"}
    longer = claims[claims["claim"].str.startswith("best runs stopped improving")]
    assert len(longer) == 1 and longer["detail"].iloc[0].count("Init[") == 2  # each init's best lr, trained longer
    for init in "AB":
        assert len(done_runs(out / "glue_tiny" / f"longer_{init}")) == 1
    assert set(claims["verdict"]) <= {"PASS", "FAIL", "TIE", "UNDECIDED"}
    report = (out / "report.md").read_text()
    assert "Wall time" in report and "## Claims" in report and (out / "reproduction.png").stat().st_size > 0
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"toy", "widthcheck", "glue_tiny"} and all(v > 0 for v in timings.values())


@pytest.mark.parametrize("scale", SHIPPED)
def test_every_shipped_scale_validates_every_run_through_its_runners_parser(scale, tmp_path, capsys):
    assert main(["--scale", scale, "--dry-run", "true", "--output_dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    stages = load_scale(scale).stages
    assert f"{len(stages)} stages valid; nothing was run" in out
    for number, stage in enumerate(stages, 1):
        assert f"[{number}/{len(stages)}] {stage.name} ({stage.kind}): " in out
    if scale == "paper":  # 6 sweeps of 11 lrs × 2 inits × 3 seeds, the hub's data, MNLI by its matched split
        assert out.count("66 runs, each parsed by the") == 6
        mnli = next(stage for stage in stages if stage.name == "roberta_mnli")
        mapping = sweep_mapping(mnli, tmp_path, {"glue": None})[0]
        assert mapping["metric"] == "eval_matched_accuracy" and "glue_dir" not in mapping["base"]
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def write_task_folder(root: Path, folder: str, files: list[str]) -> None:
    (root / folder).mkdir(parents=True)
    for name in files:
        (root / folder / name).write_text("x\n")


def test_a_glue_folder_gives_train_when_it_has_it_and_else_its_dev_split(tmp_path):
    write_task_folder(tmp_path, "SST-2", ["train.tsv", "dev.tsv"])
    write_task_folder(tmp_path, "MNLI", ["dev_matched.jsonl"])
    write_task_folder(tmp_path, "QNLI", ["train.tsv"])
    settings, note, metric = glue_source("sst2", tmp_path)
    assert settings == {"glue_dir": str(tmp_path)} and metric == "eval_accuracy" and "train split" in note
    settings, note, metric = glue_source("mnli", tmp_path)
    assert settings == {"train_file": str(tmp_path / "MNLI" / "dev_matched.jsonl")} and metric == "eval_accuracy"
    assert "no train split" in note
    with pytest.raises(ConfigError, match="no dev file of qnli"):
        glue_source("qnli", tmp_path)
    write_task_folder(tmp_path / "full", "MNLI", ["train.tsv", "dev_matched.tsv", "dev_mismatched.tsv"])
    assert glue_source("mnli", tmp_path / "full")[2] == "eval_matched_accuracy"
    assert glue_source("mnli", None)[:2] == ({}, "mnli: the hub (no --glue_dir given)")


def results_table(**columns) -> pd.DataFrame:
    base = {"lora_init": ["A", "A", "B", "B"], "learning_rate": [1e-3, 1e-2, 1e-3, 1e-2], "seed": [0, 0, 0, 0],
            "status": ["done", "diverged", "done", "failed"]}  # fmt: skip
    return pd.DataFrame(base | columns)


def test_a_classifier_learned_above_guessing_and_a_failed_run_did_not_learn():
    results = results_table(final_eval_accuracy=[0.9, 0.5, 0.56, 0.8], diag_rms_z_a=[1.0, 2.0, 3.0, 4.0])
    rule = LearnedRule("eval_accuracy", True, above=0.55)
    runs = claims_runs(results, rule)
    assert str(rule) == "eval_accuracy > 0.55 (guessing + 0.05)"
    assert runs["learned"].tolist() == [True, False, True, False]
    assert runs["metric"].isna().tolist() == [False, True, False, True]  # diverged and failed runs have no metric
    assert runs["rms_z_a"].tolist() == [1.0, 2.0, 3.0, 4.0] and runs["rms_delta2"].isna().all()


def test_a_language_model_learned_when_its_loss_fell_below_its_start():
    results = results_table(final_perplexity=[30.0, 90.0, 55.0, 1.0], before_perplexity=[50.0] * 4)
    runs = claims_runs(results, LearnedRule("perplexity", False))
    assert runs["learned"].tolist() == [True, False, False, False]
    with pytest.raises(ConfigError, match="no before_perplexity"):
        claims_runs(results.drop(columns="before_perplexity"), LearnedRule("perplexity", False))


def tiny_stage(tmp_path: Path, tiny_bert_dir: Path, glue_dir: Path, **changes) -> tuple[Stage, Path]:
    sweep = {"task": "glue", "base": {"model_name_or_path": str(tiny_bert_dir), "task_name": "sst2", "max_steps": 2},
             "grid": {"learning_rate": [1e-3, 1e-2], "lora_init": ["A", "B"]}} | changes  # fmt: skip
    stage = Stage("glue_tiny", "sweep", sweep=sweep, data=["glue"], tie=0.003)
    write_sweep_file(stage, tmp_path, {"glue": glue_dir})
    return stage, tmp_path / "glue_tiny"


def test_the_learned_rule_of_each_task_and_a_task_without_one(tmp_path, tiny_bert_dir, tiny_glue_dir):
    stage, folder = tiny_stage(tmp_path, tiny_bert_dir, tiny_glue_dir)
    assert learned_rule(load_sweep(folder / "sweep.yaml")).above == pytest.approx(0.55)
    assert learned_rule(load_sweep(folder / "sweep.yaml"), chance=0.68).above == pytest.approx(0.73)
    stage.sweep["base"]["task_name"] = "stsb"  # a regression: neither an accuracy nor measured before training
    with pytest.raises(ConfigError, match="no rule says whether a run learned"):
        check_stage(stage, tmp_path, {"glue": tiny_glue_dir})


def test_a_stage_part_way_or_not_run_is_undecided_and_a_finished_one_judged(tmp_path, tiny_bert_dir, tiny_glue_dir):
    stage, folder = tiny_stage(tmp_path, tiny_bert_dir, tiny_glue_dir)
    toy, widthcheck = Stage("toy", "toy"), Stage("widthcheck", "widthcheck")
    (tmp_path / "widthcheck").mkdir()
    pd.DataFrame({"arch": ["bert"] * 3, "scheme": ["Init[A]"] * 3, "lr": ["∝ n^-1"] * 3, "at": ["last"] * 3,
                  "quantity": ["Z_B", "δ¹", "Z_A"], "predicted": [-1.0, -1.0, 0.0], "measured": [-0.97, -0.2, 0.1],
                  "range": ["", "", ""], "result": ["pass", "FAIL", "reported (a limit)"]}).to_csv(
        tmp_path / "widthcheck" / "judged.csv", index=False)  # fmt: skip
    results = results_table(final_eval_accuracy=[0.9, 0.5, 0.56, 0.8])
    results.iloc[:3].to_csv(folder / "results.csv", index=False)
    claims = all_claims([toy, widthcheck, stage], tmp_path)
    assert claims.set_index("stage")["verdict"]["toy"] == "UNDECIDED"  # never ran
    assert claims[claims["stage"] == "widthcheck"]["verdict"].tolist() == ["PASS", "FAIL"]  # the limit is left out
    partial = claims[claims["stage"] == "glue_tiny"]
    assert partial["verdict"].tolist() == ["UNDECIDED"] and "3 of 4 runs finished" in partial["detail"].iloc[0]
    results.to_csv(folder / "results.csv", index=False)
    judged = all_claims([stage], tmp_path)
    assert len(judged) == 6 and "1 failed runs count as not learning" in judged["detail"].iloc[0]
    assert judged.set_index("claim")["verdict"]["largest lr that still learns: Init[A] > Init[B]"] == "TIE"  # 1e-3


def test_the_best_runs_trained_longer_say_whether_they_had_stopped_improving(tmp_path, tiny_bert_dir, tiny_glue_dir):
    stage, folder = tiny_stage(tmp_path, tiny_bert_dir, tiny_glue_dir)
    stage.longer = {"max_steps": 4}
    mapping = longer_mapping(stage, tmp_path, {"glue": tiny_glue_dir}, "B", 1e-2)
    assert mapping["base"]["max_steps"] == 4 and mapping["base"]["lora_init"] == "B"
    assert mapping["grid"] == {"seed": [42]} and mapping["output_root"] == str(folder / "longer_B")
    results_table(final_eval_accuracy=[0.9, 0.5, 0.56, 0.8]).to_csv(folder / "results.csv", index=False)
    pd.DataFrame({"lora_init": ["A", "B"], "best_lr": [1e-3, 1e-3]}).to_csv(folder / "best.csv", index=False)
    for init, gain in (("A", 0.001), ("B", 0.02)):
        (folder / f"longer_{init}").mkdir()
        longer = {"seed": [0], "status": ["done"], "final_eval_accuracy": [{"A": 0.9, "B": 0.56}[init] + gain]}
        pd.DataFrame(longer).to_csv(folder / f"longer_{init}" / "results.csv", index=False)
    row = all_claims([stage], tmp_path).set_index("claim").filter(like="stopped improving", axis=0).iloc[0]
    assert row["verdict"] == "FAIL"  # Init[B] gained 2 points from twice the training: it was still improving
    assert row["init_a"] == pytest.approx(0.001) and row["init_b"] == pytest.approx(0.02)


def test_a_rerun_with_other_data_options_is_refused(tmp_path, tiny_bert_dir, tiny_glue_dir):
    stage, _ = tiny_stage(tmp_path, tiny_bert_dir, tiny_glue_dir)
    assert "4 runs" in check_stage(stage, tmp_path, {"glue": tiny_glue_dir})
    with pytest.raises(ConfigError, match="ran on other data"):
        check_stage(stage, tmp_path, {"glue": None})  # --glue_dir forgotten: its runs would start over from the hub


def write_scale(tmp_path: Path, stage: dict, name: str = "mine") -> str:
    path = tmp_path / "scale.yaml"
    path.write_text(yaml.safe_dump({"name": name, "stages": [stage]}))
    return str(path)


SWEEP = {"task": "glue", "grid": {"learning_rate": [1e-3]}}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--scale", "huge"], "neither a shipped scale"),
        (["--scale", "quick", "--stages", "toy", "nope"], "'nope' is not a stage of quick"),
        (["--scale", "cpu", "--glue_dir", "/nonexistent/glue"], "--glue_dir: not found"),
        (["--scale", "quick", "--backend", "cloud"], "backend: one of local, slurm"),
        ([{"name": "s", "kind": "sweep", "sweep": SWEEP}], "tie must be a number"),
        ([{"name": "s", "kind": "sweep", "tie": float("nan"), "sweep": SWEEP}], "tie must be a number"),
        ([{"name": "s", "kind": "sweep", "tie": 0.1, "chance": 1.5, "sweep": SWEEP}], "chance must be an accuracy"),
        ([{"name": "s", "kind": "sweep", "tie": 0.1, "data": [{"a": 1}], "sweep": SWEEP}], "data must be a list"),
        ([{"name": "t", "kind": "toy", "settings": []}], "settings must be a mapping"),
        ([{"name": "s", "kind": "sweep", "tie": 0.1, "sweep": SWEEP | {"name": "x"}}], "sweep.name is set by"),
        ([{"name": "s", "kind": "sweep", "tie": 0.1, "data": ["imagenet"], "sweep": SWEEP}], "data must list"),
        ([{"name": "s", "kind": "sweep", "tie": 0.1, "data": ["glue"], "sweep": SWEEP}], "needs the stage's task"),
        ([{"name": "t", "kind": "toy", "tie": 0.1}], "are for sweep stages"),
        (
            [
                {
                    "name": "s",
                    "kind": "sweep",
                    "tie": 0.1,
                    "data": ["glue"],
                    "sweep": SWEEP | {"metric": "f1", "base": {"task_name": "sst2"}},
                }
            ],
            "sweep.metric is set by the reproduction",
        ),  # fmt: skip
        ([{"name": "t", "kind": "toys"}], "kind must be one of"),
        ([{"name": "../t", "kind": "toy"}], "plain folder name"),
        ([{"name": "t", "kind": "toy", "setings": {}}], "unknown key 'setings'"),
        ([{"name": "t", "kind": "toy", "settings": {"widths": [0]}}], "widths"),
    ],
)
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    if isinstance(argv[0], dict):
        argv = ["--scale", write_scale(tmp_path, argv[0])]
    assert main([*argv, "--dry-run", "true", "--output_dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_a_scale_name_that_is_no_plain_folder_name_is_refused(tmp_path, capsys):
    scale = write_scale(tmp_path, {"name": "t", "kind": "toy"}, name="../../escape")
    assert main(["--scale", scale, "--dry-run", "true"]) == 2
    assert "the scale's name must be a plain folder name" in capsys.readouterr().err


@pytest.mark.parametrize("scale", SHIPPED)
def test_every_shipped_scale_says_where_its_settings_come_from(scale):
    header = [line for line in scale_file(scale).read_text().splitlines() if line.startswith("#")]
    assert any(line.startswith("# Provenance") for line in header)
