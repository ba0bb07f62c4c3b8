"""Pack sizing by memory (issue 6, `--pack auto`): the probe's measurements, its extrapolation, and the sweep tool's
use of it."""

import json
from pathlib import Path

import pytest
import torch

from lorakit.core.errors import ConfigError
from lorakit.packing.probe import HEADROOM, TensorBytes, fit, probe_in_subprocess
from lorakit.runs.probe import probe
from lorakit.sweeps.__main__ import main as sweeps_main
from tests.test_packed_glue import argv


def test_tensor_bytes_follows_what_lives_and_keeps_the_peak():
    kept = torch.zeros(100)  # 400 bytes, there before
    with TensorBytes(kept) as counter:
        first = torch.zeros(1000)  # +4000
        view = first.view(10, 100)  # a view holds no new storage
        second = torch.ones(500, dtype=torch.float64)  # +4000
        del first, view  # -4000
        third = second.sum()  # +8
    assert counter.peak == 400 + 4000 + 4000
    assert counter.now == 400 + 4000 + 8
    assert float(third) == 500


def test_a_linear_layers_training_step_holds_weights_gradients_and_adam_state():
    layer = torch.nn.Linear(64, 256)
    optimizer = torch.optim.AdamW(layer.parameters())
    weights = sum(p.numel() * 4 for p in layer.parameters())
    with TensorBytes(layer) as counter:
        layer(torch.randn(8, 64)).square().mean().backward()
        optimizer.step()
    assert counter.now >= 4 * weights  # weights, gradients, two Adam moments
    assert counter.peak <= 6 * weights  # and the optimizer's weight-sized temporaries, not much else


def test_the_fit_takes_the_most_configurations_the_budget_holds():
    peaks = {1: 1100, 2: 1200}  # base 1000, 100 per configuration
    assert fit(peaks, (1000 + 7 * 100) / HEADROOM)[0] == 7
    assert fit(peaks, (1000 + 7.9 * 100) / HEADROOM)[0] == 7
    assert fit(peaks, 900)[0] == 1  # nothing fits: one at a time, never zero
    assert fit({1: 1100}, 1e9)[0] == 1  # a pack of 2 ran out of memory
    k, line = fit(peaks, (1000 + 5 * 100) / HEADROOM)
    assert (k, line) == (5, {"base_bytes": 1000, "per_configuration_bytes": 100, "estimate_bytes": 1500})
    with pytest.raises(ConfigError, match="no more than a pack of 1"):
        fit({1: 1100, 2: 1100}, 1e9)  # no growth: nothing to extrapolate, rather than "everything fits"


def test_a_pack_grows_linearly_and_the_predicted_size_fits(no_dropout_bert, tiny_glue_dir, tmp_path):
    configs = [("A", 1e-3, 1), ("B", 1e-3, 4), ("A", 4e-3, 4)]
    members = [argv(no_dropout_bert, tiny_glue_dir, tmp_path / f"m{i}", *c) for i, c in enumerate(configs)]
    peaks = {k: probe("glue", members, k)["peak_bytes"] for k in (1, 2, 3)}
    assert peaks[1] < peaks[2] < peaks[3]
    assert peaks[3] - peaks[2] == pytest.approx(peaks[2] - peaks[1], rel=0.05)
    per = peaks[2] - peaks[1]
    k, line = fit({1: peaks[1], 2: peaks[2]}, (peaks[1] + 2.5 * per) / HEADROOM)
    assert k == 3 and peaks[3] <= line["estimate_bytes"] * 1.05
    assert not any((tmp_path / f"m{i}").exists() for i in range(3))  # a probe writes nothing of the members'


def test_the_probe_runs_a_causal_lm_pack_also_in_its_own_process(tiny_llama_dir, tiny_corpus_dir, tmp_path):
    common = ["--model_name_or_path", str(tiny_llama_dir), "--task_name", "text", "--data_dir", str(tiny_corpus_dir)]
    common += ["--block_size", "32", "--per_device_train_batch_size", "2"]
    members = [[*common, "--output_dir", str(tmp_path / f"m{i}"), "--lora_init", s] for i, s in enumerate("AB")]
    (tmp_path / "pack.json").write_text(json.dumps({"runner": "run_llm.py", "members": members}))
    one, two = probe("lm", members, 1), probe_in_subprocess(tmp_path / "pack.json", 2)
    assert one["measured_by"] == "live tensor bytes" and one["device_bytes"] > 2**30
    assert 0 < one["peak_bytes"] < two["peak_bytes"]
    (tmp_path / "pack.json").write_text(json.dumps({"runner": "run_llm.py", "members": [[*common, "--nonsense"]]}))
    with pytest.raises(Exception, match="measuring a pack of 1"):
        probe_in_subprocess(tmp_path / "pack.json", 1)


def sweep_file(tmp_path, model, glue_dir, grid: str, top: str = "pack: auto\n", base: str = "") -> Path:
    """A run_glue.py sweep YAML over the tiny BERT: `grid` and `top` (top-level lines) as YAML text, `base`: extra
    base settings."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        f"runner: run_glue.py\noutput_root: {tmp_path / 'out'}\n{top}"
        f"base: {{model_name_or_path: {model}, glue_dir: {glue_dir}, task_name: sst2{base}}}\ngrid: {grid}\n"
    )
    return sweep


def test_pack_auto_sizes_each_setting_once_and_keeps_the_measurement(
    tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch, capsys
):
    calls = []

    def fake_probe(pack_file, k, gpu=None):
        calls.append((pack_file.parent.name, k, gpu))
        return {"k": k, "peak_bytes": 1000 + 100 * k, "measured_by": "live tensor bytes", "device": "CPU",
                "device_bytes": 10**12}  # fmt: skip

    monkeypatch.setattr("lorakit.sweeps.autopack.probe_in_subprocess", fake_probe)
    grid = "{learning_rate: [1e-4, 2e-4, 4e-4, 8e-4], lora_init: [A, B], seed: [0, 1]}"
    sweep = sweep_file(tmp_path, tiny_bert_dir, tiny_glue_dir, grid, top="", base=", max_steps: 2")
    budget = (1000 + 3 * 100) / HEADROOM / 2**30  # 3 configurations fit
    assert sweeps_main(["run", str(sweep), "--pack", "auto", "--pack-memory", str(budget), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert out.out.count("# pack of 3") == 4 and out.out.count("# pack of 2") == 2  # 8 points per seed: 3 + 3 + 2
    assert "3 per pack fit" in out.err
    assert [k for _, k, _ in calls] == [1, 2]  # measured once for both seeds
    kept = next((tmp_path / "out" / "packs").glob("probe_*/probe.json"))
    assert json.loads(kept.read_text())["peaks"] == {"1": 1100, "2": 1200}
    calls.clear()
    assert sweeps_main(["run", str(sweep), "--pack", "auto", "--pack-memory", "100", "--dry-run"]) == 0
    assert calls == [] and capsys.readouterr().out.count("# pack of 8") == 2  # kept figures, a larger budget
    assert sweeps_main(["run", str(sweep), "--pack", "2", "--pack-memory", "10", "--dry-run"]) == 2


def test_pack_auto_refuses_to_size_gpu_runs_from_a_cpu_measurement(
    tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch, capsys
):
    cpu = {"peak_bytes": 1, "measured_by": "live tensor bytes", "device": "CPU", "device_bytes": 10**12}
    monkeypatch.setattr("lorakit.sweeps.autopack.probe_in_subprocess", lambda pack_file, k, gpu=None: {"k": k, **cpu})
    grid, gpus = "{learning_rate: [1e-4, 2e-4], lora_init: [A]}", "pack: auto\nslurm: {gpus_per_run: 1}\n"
    sweep = sweep_file(tmp_path, tiny_bert_dir, tiny_glue_dir, grid, top=gpus)
    assert sweeps_main(["run", str(sweep), "--backend", "slurm", "--dry-run"]) == 2
    assert "give --pack K" in capsys.readouterr().err


def test_a_pack_of_two_out_of_memory_runs_the_points_one_at_a_time(
    tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch, capsys
):
    def fake_probe(pack_file, k, gpu=None):
        figures = {"k": k, "measured_by": "CUDA allocator", "device": "small GPU", "device_bytes": 2**30}
        return {**figures, "peak_bytes": None, "out_of_memory": True} if k == 2 else {**figures, "peak_bytes": 2**29}

    monkeypatch.setattr("lorakit.sweeps.autopack.probe_in_subprocess", fake_probe)
    sweep = sweep_file(tmp_path, tiny_bert_dir, tiny_glue_dir, "{learning_rate: [1e-4, 2e-4], lora_init: [A, B]}")
    assert sweeps_main(["run", str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "# pack of" not in out.out and out.out.count("run_glue.py") == 4
    assert "2: out of memory" in out.err and "1 per pack fit" in out.err


def test_one_configuration_out_of_memory_is_an_error_and_no_pack_of_two_is_tried(
    tiny_bert_dir, tiny_glue_dir, tmp_path, monkeypatch, capsys
):
    tried = []

    def fake_probe(pack_file, k, gpu=None):
        tried.append(k)
        figures = {"k": k, "measured_by": "CUDA allocator", "device": "small GPU", "device_bytes": 2**30}
        return {**figures, "peak_bytes": None, "out_of_memory": True}

    monkeypatch.setattr("lorakit.sweeps.autopack.probe_in_subprocess", fake_probe)
    sweep = sweep_file(tmp_path, tiny_bert_dir, tiny_glue_dir, "{learning_rate: [1e-4, 2e-4], lora_init: [A]}")
    assert sweeps_main(["run", str(sweep), "--dry-run"]) == 2
    assert "does not fit" in capsys.readouterr().err and tried == [1]
