"""Bad input for run_toy.py and python -m sweeps (and python -m lorakit probe): one line on stderr naming the field,
key or file, exit code 2, and nothing written before it: numbers out of range or not finite, values given twice,
sweep files that would hang, escape their folder, be silently overridden or run one point twice."""

import json
import shutil

import pytest

import run_toy
from lorakit.__main__ import main as lorakit_main
from lorakit.sweeps.__main__ import main as sweeps_main
from tests.test_bad_input_classes import one_error_line


@pytest.fixture
def glue(tmp_path, tiny_glue_dir):
    shutil.copytree(tiny_glue_dir / "SST-2", tmp_path / "glue" / "SST-2")
    return tmp_path / "glue"


TOY = {
    "a width twice": (["--widths", "128", "128"], "widths: 128 is given twice"),
    "a seed twice": (["--seeds", "0", "0"], "seeds: 0 is given twice"),
    "an infinite lr": (["--lrs", "0.1", "inf"], "lrs: must be > 0, got inf"),
    "an infinite lr_max": (["--lr_max", "inf"], "lr_max: must be > 0, got inf"),
    "no steps": (["--steps", "0"], "steps: must be a positive integer"),
    "width 0": (["--widths", "0", "8"], "widths: must be a positive integer, got 0"),
    "rank above the width": (["--rank", "4", "--widths", "2"], "rank: 4 is larger than the smallest width 2"),
    "alpha NaN": (["--alpha", "nan"], "alpha: must be > 0, got nan"),
    "width not a number": (["--widths", "two"], "--widths: invalid int value: 'two'"),
    "divergence factor 1": (["--divergence_factor", "1"], "divergence_factor: must be > 1"),
}


@pytest.mark.parametrize("case", TOY)
def test_a_toy_setting_that_cannot_run(case, capsys, tmp_path):
    argv, message = TOY[case]
    line = one_error_line(capsys, "run_toy.py", run_toy.main([*argv, "--output_dir", str(tmp_path / "toy")]))
    assert message in line and not (tmp_path / "toy").exists()


def test_a_toy_output_dir_that_is_a_file(capsys, tmp_path):
    (tmp_path / "toy").write_text("")
    code = run_toy.main(["--widths", "8", "--output_dir", str(tmp_path / "toy")])
    assert "output_dir: " in one_error_line(capsys, "run_toy.py", code)


def sweep_file(tmp_path, tiny_bert_dir, glue, **changes) -> str:
    sweep = {
        "name": "probe",
        "runner": "run_glue.py",
        "base": {"model_name_or_path": str(tiny_bert_dir), "task_name": "sst2", "glue_dir": str(glue)},
        "grid": {"learning_rate": [1e-3, 2e-3]},
        "output_root": str(tmp_path / "sweep"),
    }
    for key, value in changes.items():
        sweep[key] = value
    path = tmp_path / "sweep.yaml"
    path.write_text(json.dumps(sweep))  # JSON is YAML
    return str(path)


SWEEPS = {
    "workers not a number": ({"local": {"workers": "two"}}, [], "local.workers: must be a positive integer"),
    "no workers": ({"local": {"workers": 0}}, [], "local.workers: must be a positive integer, got 0"),
    "workers flag negative": ({}, ["--workers=-1"], "argument --workers: must be a positive integer"),
    "workers flag 0": ({}, ["--workers", "0"], "argument --workers: must be a positive integer"),
    "a name that leaves the folder": ({"name": "../../x"}, [], "name: letters, digits"),
    "a grid over the run folder": ({"grid": {"output_dir": ["a", "b"]}}, [], "output_dir is set by the sweep"),
    "a string for a boolean": ({"higher_is_better": "no"}, [], "higher_is_better: must be true or false"),
    "a mapping as a grid value": ({"grid": {"learning_rate": [{"a": 1}]}}, [], "grid.learning_rate: values must be"),
    "base not a mapping": ({"base": ["a"]}, [], "base: must be a mapping"),
    "a negative time limit": ({"slurm": {"time_min": -5}}, [], "slurm.time_min: must be a positive integer"),
    "pack memory NaN": ({}, ["--pack", "auto", "--pack-memory", "nan"], "argument --pack-memory: must be a number"),
    "a secret the runners lack": ({"base": {"api_key": "x"}}, [], "base.api_key: the runners take no such secret"),
    "an infinite lr in the grid": ({"grid": {"learning_rate": ["inf"]}}, [], "learning_rate: must be > 0, got inf"),
    "a secret in the grid": ({"grid": {"hub_token": ["a", "b"]}}, [], "grid.hub_token: a secret cannot vary"),
}


@pytest.mark.parametrize("case", SWEEPS)
def test_a_sweep_file_or_flag_that_cannot_run(case, capsys, tiny_bert_dir, glue, tmp_path):
    changes, flags, message = SWEEPS[case]
    path = sweep_file(tmp_path, tiny_bert_dir, glue, **changes)
    line = one_error_line(capsys, "sweeps", sweeps_main(["run", path, *flags]))
    assert message in line and not (tmp_path / "sweep" / "runs").exists()


def test_a_malformed_sweep_file_is_named_with_its_line(capsys, tmp_path):
    (tmp_path / "sweep.yaml").write_text("runner: run_glue.py\ngrid: {learning_rate: [1e-3\n")
    line = one_error_line(capsys, "sweeps", sweeps_main(["status", str(tmp_path / "sweep.yaml")]))
    assert "sweep.yaml line" in line and "not valid YAML" in line


def test_slurm_where_there_is_none(capsys, tiny_bert_dir, glue, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    path = sweep_file(tmp_path, tiny_bert_dir, glue)
    line = one_error_line(capsys, "sweeps", sweeps_main(["run", path, "--backend", "slurm"]))
    assert "--backend slurm: no SLURM here" in line


MORE_SWEEPS = {
    "one lr written two ways": ({"grid": {"learning_rate": ["1e-3", 0.001]}}, "are the same settings written twice"),
    "a fractional worker count": ({"local": {"workers": 2.0}}, "local.workers: must be a positive integer, got 2.0"),
    "a GPU listed twice": ({"local": {"gpus": [0, 0]}}, "local.gpus: must be auto, a count, or a list of distinct"),
    "a recipe that sets the run folder": ({"base": {"config": "{recipe}"}}, "its config recipe sets output_dir"),
}


@pytest.mark.parametrize("case", MORE_SWEEPS)
def test_a_sweep_that_would_run_a_point_twice_or_wrongly(case, capsys, tiny_bert_dir, glue, tmp_path):
    changes, message = MORE_SWEEPS[case]
    (tmp_path / "recipe.yaml").write_text(f"output_dir: {tmp_path / 'elsewhere'}\n")
    if "base" in changes:
        changes = {"base": {"model_name_or_path": str(tiny_bert_dir), "task_name": "sst2", "glue_dir": str(glue),
                            "config": str(tmp_path / "recipe.yaml")}}  # fmt: skip
    path = sweep_file(tmp_path, tiny_bert_dir, glue, **changes)
    assert message in one_error_line(capsys, "sweeps", sweeps_main(["run", path, "--dry-run"]))


def test_a_sweep_file_whose_name_is_no_folder_name(capsys, tiny_bert_dir, glue, tmp_path):
    path = sweep_file(tmp_path, tiny_bert_dir, glue)
    spec = json.loads(open(path).read())
    del spec["name"]
    (tmp_path / "..yaml").write_text(json.dumps(spec))
    line = one_error_line(capsys, "sweeps", sweeps_main(["status", str(tmp_path / "..yaml")]))
    assert "is not a plain folder name" in line


def test_a_report_of_a_metric_no_run_reports(capsys, tiny_bert_dir, glue, tmp_path):
    from lorakit.sweeps.spec import load_sweep

    path = sweep_file(tmp_path, tiny_bert_dir, glue, metric="eval_acuracy")
    for point in load_sweep(path).points():
        point.run_dir.mkdir(parents=True)
        (point.run_dir / "metrics.json").write_text(json.dumps({"status": "done", "final": {"eval_accuracy": 0.7}}))
    line = one_error_line(capsys, "sweeps", sweeps_main(["report", path]))
    assert "metric: no run reports 'eval_acuracy' (they report eval_accuracy)" in line


@pytest.mark.parametrize("k, message", [("0", "K: must be between 1 and the pack's 2"), ("3", "and the pack's 2")])
def test_a_probe_of_more_members_than_the_pack_has(k, message, capsys, tmp_path):
    (tmp_path / "pack.json").write_text(json.dumps({"runner": "run_glue.py", "members": [["--seed", "0"]] * 2}))
    assert message in one_error_line(capsys, "lorakit probe", lorakit_main(["probe", str(tmp_path / "pack.json"), k]))


def test_a_probe_of_a_file_that_is_no_pack(capsys, tmp_path):
    (tmp_path / "pack.json").write_text("[]")
    line = one_error_line(capsys, "lorakit probe", lorakit_main(["probe", str(tmp_path / "pack.json"), "1"]))
    assert "not a pack file" in line
