"""A task written once, in this file only, runs in every mode: a single run, a pack of 2 whose members equal their
single runs, and a 2-point sweep whose workers find the task by its module path. The task is a regression on a tiny
BERT (how many of a sentence's words are "good"), with its own data arguments and label space. The generic drivers
treat it as they treat the built-in tasks: its own settings guard a resumed run, every configuration of a pack gets
its default output_dir, and a task whose model arguments have no quantization flags is swept without them."""

import json
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from lorakit.core.fields import POSITIVE_INT
from lorakit.models.arguments import LoraArguments, ModelArguments
from lorakit.runs.pack import prepare_pack, run_pack
from lorakit.runs.single import main as run_single
from lorakit.sweeps.spec import load_sweep, validate
from lorakit.tasks.base import RunArguments, Task
from lorakit.tasks.classification import Example, SequenceClassificationTask, TaskData
from lorakit.training.arguments import TrainArguments
from tests.conftest import WORDS

ROOT = Path(__file__).resolve().parents[1]
SPEC = "tests.test_custom_task:CountGood"


@dataclass
class CountData:
    """The task's own data: sentences of the tiny vocabulary, labelled with the share of their words that are good."""

    examples: int = field(default=48, metadata={"help": "Training sentences.", "rule": POSITIVE_INT})
    held_out: int = field(default=16, metadata={"help": "Evaluation sentences.", "rule": POSITIVE_INT})
    max_seq_length: int = field(default=16, metadata={"help": "Tokens per sentence.", "rule": POSITIVE_INT})


@dataclass(frozen=True)
class Share:
    """A regression label space, scored by the Pearson and Spearman correlations."""

    num_labels: int = 1
    is_regression: bool = True
    metrics: tuple = ("pearson", "spearmanr")
    primary_metric: str = "pearson"


class CountGood(SequenceClassificationTask):
    name = "count_good"
    argument_types = (ModelArguments, LoraArguments, CountData, TrainArguments)
    sweep_metric = "eval_pearson"

    def label_space(self, args: RunArguments) -> Share:
        return Share()

    def read_data(self, args: RunArguments) -> TaskData:
        draw = random.Random(0)

        def sentence() -> Example:
            words = [draw.choice(WORDS) for _ in range(6)]
            return Example((" ".join(words),), words.count("good") / len(words))

        train = [sentence() for _ in range(args.data.examples)]
        return TaskData(train, {"validation": [sentence() for _ in range(args.data.held_out)]}, "generated")


@dataclass
class PlainModel:
    """Model arguments with no quantization flags (nor anything else of the project's `ModelArguments`)."""

    model_name_or_path: str = field(default="", metadata={"help": "The model."})


class Plain(Task):
    """A task whose arguments are its own, down to the model's: enough to parse and to be swept."""

    name, peft_task_type = "plain", "SEQ_CLS"
    argument_types = (PlainModel, LoraArguments, CountData, TrainArguments)


def argv(model: Path, out: Path, scheme: str, lr: str) -> list[str]:
    settings = ["--model_name_or_path", str(model), "--output_dir", str(out), "--lora_init", scheme]
    settings += ["--learning_rate", lr, "--max_steps", "12", "--per_device_train_batch_size", "8", "--lora_r", "4"]
    return [*settings, "--eval_strategy", "steps", "--eval_steps", "6", "--lora_dropout", "0", "--seed", "3"]


def adapter(folder: Path) -> dict:
    return load_file(folder / "adapter_model.safetensors")


def final(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())["final"]


def test_a_task_of_ones_own_runs_alone_and_in_a_pack_that_equals_its_single_runs(no_dropout_bert, tmp_path):
    configs = [("A", "5e-3"), ("B", "2e-3")]
    for i, (scheme, lr) in enumerate(configs):
        assert run_single(CountGood(), argv(no_dropout_bert, tmp_path / f"single{i}", scheme, lr), "test") == 0
    members = [argv(no_dropout_bert, tmp_path / f"member{i}", *config) for i, config in enumerate(configs)]
    assert run_pack(CountGood(), members, str(tmp_path / "pack")) == 0
    for i in range(len(configs)):
        single, member = tmp_path / f"single{i}", tmp_path / f"member{i}"
        assert {"eval_loss", "eval_pearson"} <= set(final(single))
        assert final(member)["eval_loss"] == pytest.approx(final(single)["eval_loss"], rel=1e-5)
        theirs, ours = adapter(single), adapter(member)
        for name in theirs:
            reference = theirs[name].norm().item()
            assert (ours[name] - theirs[name]).norm().item() <= 1e-5 * max(reference, 1e-8), name
    settings = json.loads((tmp_path / "single0" / "run_config.json").read_text())["settings"]
    assert settings["data.examples"] == 48 and settings["data.held_out"] == 16  # the task's own fields count
    other_data = [*argv(no_dropout_bert, tmp_path / "single0", "A", "5e-3"), "--examples", "40"]
    assert run_single(CountGood(), other_data, "test") == 2  # a run on other data is not "finished", nor resumed


def test_every_configuration_of_a_pack_of_a_task_of_ones_own_gets_its_default_output_dir(no_dropout_bert, tmp_path):
    base = ["--model_name_or_path", str(no_dropout_bert), "--lora_r", "4"]
    configs = [[*base, "--lora_init", scheme, "--learning_rate", lr] for scheme, lr in [("A", "1e-3"), ("B", "2e-3"),
                                                                                       ("A", "3e-3")]]  # fmt: skip
    arguments, _ = prepare_pack(CountGood(), configs)
    folders = [a.training.output_dir for a in arguments]
    assert folders == [
        f"outputs/count_good/{no_dropout_bert.name}_init{s}_lr{lr}_ratio1_seed42"
        for s, lr in [("A", "0.001"), ("B", "0.002"), ("A", "0.003")]
    ]


def test_a_task_of_ones_own_is_swept_by_its_module_path(no_dropout_bert, tmp_path):
    sweep = {
        "name": "count_good",
        "task": SPEC,
        "output_root": str(tmp_path / "out"),
        "base": {"model_name_or_path": str(no_dropout_bert), "max_steps": 6, "per_device_train_batch_size": 8},
        "grid": {"learning_rate": [1e-3, 5e-3]},
        "local": {"workers": 1},
        "pack": 2,
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    command = [sys.executable, "-m", "lorakit.sweeps", "run", str(tmp_path / "sweep.yaml")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 2 and (results["status"] == "done").all() and results["final_eval_pearson"].notna().all()


def test_a_task_whose_model_arguments_have_no_quantization_flags_is_swept_without_them(tmp_path):
    sweep = {"name": "plain", "task": "tests.test_custom_task:Plain", "output_root": str(tmp_path / "out")}
    sweep |= {"base": {"model_name_or_path": "m", "examples": 8}, "grid": {"learning_rate": [1e-3, 2e-3]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    points = validate(load_sweep(tmp_path / "sweep.yaml"))
    assert [p.values["learning_rate"] for p in points] == [1e-3, 2e-3]
    assert points[0].command("python")[1:5] == ["-m", "lorakit", "run", "tests.test_custom_task:Plain"]
