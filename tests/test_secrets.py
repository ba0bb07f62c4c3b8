"""No secret reaches a file: fake tokens in the environment, on a runner's command line and in a sweep file appear in
no file the toolkit or the Trainer writes (records, logs, checkpoints, training_args.bin, pack files), text or
binary."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TOKENS = {
    "environment": "hf_EnvironmentTokenAAAAAAAAAAAAAAAAAAAA",
    "command line": "hf_CommandLineTokenBBBBBBBBBBBBBBBBBBBB",
    "sweep file": "hf_SweepFileTokenCCCCCCCCCCCCCCCCCCCCCC",
    "an api key": "sk-ApiKeyDDDDDDDDDDDDDDDDDDDDDDDDDDDD",
}


def files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and secret.encode() in p.read_bytes()]


def test_fake_tokens_appear_in_no_file_under_the_output_folders(tiny_bert_dir, tiny_glue_dir, tmp_path):
    env = {**os.environ, "HF_TOKEN": TOKENS["environment"], "WANDB_API_KEY": TOKENS["an api key"]}
    env |= {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    data = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--glue_dir", str(tiny_glue_dir)]
    steps = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--lora_dropout", "0"]
    single = [sys.executable, "run_glue.py", *data, *steps, "--output_dir", str(tmp_path / "out" / "single")]
    done = subprocess.run([*single, "--hub_token", TOKENS["command line"]], cwd=ROOT, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr[-2000:]

    sweep = {
        "name": "secret",
        "runner": "run_glue.py",
        "output_root": str(tmp_path / "out" / "sweep"),
        "base": {**dict(zip(data[::2], data[1::2], strict=True)), "hub_token": TOKENS["sweep file"]},
        "grid": {"learning_rate": [1e-3, 2e-3]},
        "pack": 2,
    }
    sweep["base"] = {k.removeprefix("--"): v for k, v in sweep["base"].items()}
    sweep["base"] |= {"max_steps": 4, "save_strategy": "steps", "save_steps": 2, "lora_dropout": 0}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    command = [sys.executable, "-m", "lorakit.sweeps", "run", str(tmp_path / "sweep.yaml")]
    ran = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    written = list((tmp_path / "out").rglob("*"))
    assert any(p.name == "training_args.bin" for p in written) and any(p.name == "pack.json" for p in written)
    assert any(p.name == "attempts.json" for p in written) and any(p.name == "run_config.json" for p in written)
    for where, secret in TOKENS.items():
        assert files_holding(tmp_path / "out", secret) == [], where
