"""A pack's configurations in the loggers: each its own TensorBoard run with its own loss, learning rates per group
and evaluations (the final one too), named as a single run names them."""

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lorakit.packing.boards
from lorakit.packing.boards import MemberBoards, member_keys, member_logs
from lorakit.runs.pack import run_pack

TRAIN = ["--max_steps", "4", "--per_device_train_batch_size", "8", "--logging_steps", "1", "--report_to",
         "tensorboard", "--lora_dropout", "0", "--loraplus_lr_ratio", "4"]  # fmt: skip


def scalars(member: Path) -> dict[str, list[tuple[int, float]]]:
    (folder,) = (member / "runs").iterdir()
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize(
    "evaluations, steps",
    [(["--eval_strategy", "steps", "--eval_steps", "2"], [2, 4]), (["--eval_strategy", "no"], [4])],
    ids=["during", "after"],
)  # after: the final evaluation is taken once training has ended
def test_a_pack_of_two_writes_two_tensorboard_runs_with_their_own_curves(
    evaluations, steps, tmp_path, tiny_bert_dir, tiny_glue_dir
):
    common = ["--model_name_or_path", str(tiny_bert_dir), "--task_name", "sst2", "--glue_dir", str(tiny_glue_dir)]
    common += evaluations
    runs = {"A": ("A", "1e-2"), "B": ("B", "3e-1")}
    members = [[*common, *TRAIN, "--lora_init", init, "--learning_rate", lr, "--output_dir", str(tmp_path / name)]
               for name, (init, lr) in runs.items()]  # fmt: skip
    assert run_pack("glue", members, str(tmp_path / "pack")) == 0
    curves = {name: scalars(tmp_path / name) for name in runs}
    pack = scalars(tmp_path / "pack")  # the pack's own run: its summed loss, and adapter 0's learning rate
    for name, found in curves.items():
        assert [step for step, _ in found["train/loss"]] == [1, 2, 3, 4], name
        assert {"train/learning_rate", "train/learning_rate/A", "train/learning_rate/B", "eval/accuracy"} <= set(found)
        ratio = found["train/learning_rate/B"][1][1] / found["train/learning_rate/A"][1][1]
        assert ratio == pytest.approx(4)  # LoRA+: the member's own groups
    for name in runs:  # in the member's one run, the final evaluation too
        final = json.loads((tmp_path / name / "metrics.json").read_text())["final"]
        assert [step for step, _ in curves[name]["eval/accuracy"]] == steps
        assert curves[name]["eval/accuracy"][-1][1] == pytest.approx(final["eval_accuracy"])
    assert curves["A"]["train/learning_rate"] == pack["train/learning_rate"]  # the rate each step was taken at
    assert curves["B"]["train/learning_rate"][1][1] == pytest.approx(30 * curves["A"]["train/learning_rate"][1][1])
    assert curves["A"]["train/loss"] != curves["B"]["train/loss"]  # each its own loss, not the pack's sum
    total = [a + b for (_, a), (_, b) in zip(curves["A"]["train/loss"], curves["B"]["train/loss"], strict=True)]
    assert total == pytest.approx([value for _, value in pack["train/loss"]], rel=1e-4)


def test_a_packs_log_splits_into_each_members_log_named_as_a_single_runs():
    logs = {"loss": 3.0, **member_keys([1.0, 2.0], [{"A": 1e-3, "B": 4e-3}, {"A": 2e-3}], live=[0, 1])}
    logs |= {"eval_0_accuracy": 0.9, "eval_1_accuracy": 0.6, "diag/1/rms_z_a": 0.5, "eval_10_loss": 9.0}
    assert member_logs(logs, 0) == {"loss": 1.0, "learning_rate": 1e-3, "learning_rate/A": 1e-3,
                                    "learning_rate/B": 4e-3, "eval_accuracy": 0.9}  # fmt: skip
    assert member_logs(logs, 1) == {"loss": 2.0, "learning_rate": 2e-3, "learning_rate/A": 2e-3,
                                    "eval_accuracy": 0.6, "diag/rms_z_a": 0.5}  # fmt: skip
    assert member_logs(logs, 10) == {"eval_loss": 9.0}
    assert "loss/0" not in member_keys([1.0, 2.0], [{}, {}], live=[1])  # a diverged member logs nothing more


def test_a_members_writer_reopened_after_training_writes_into_the_same_run(tmp_path, monkeypatch):
    boards = MemberBoards([tmp_path])
    first = boards.writer(0).get_logdir()
    boards.on_train_end(None, None, None)
    monkeypatch.setattr(lorakit.packing.boards, "default_logdir", lambda: "a_later_second")
    assert boards.writer(0).get_logdir() == first
    boards.on_train_end(None, None, None)
