"""The LM tasks read the real files in ../shared/data/lm completely, when that folder exists (never in a user's
checkout)."""

import pytest

from lorakit.tasks.lm.data import LmDataArguments, load_lm_data
from lorakit.tasks.lm.gsm8k import final_number
from lorakit.tasks.lm.mmlu import mmlu_prompt
from tests.conftest import SHARED_LM

pytestmark = pytest.mark.skipif(not SHARED_LM.is_dir(), reason="../shared/data/lm is not present")


def test_wikitext2_train_and_test_splits():
    data = load_lm_data(LmDataArguments(task_name="wikitext2", data_dir=str(SHARED_LM / "wikitext-2")))
    assert len(data.train) == len(data.heldout) == 1
    assert (data.train[0].count("\n"), data.heldout[0].count("\n")) == (36_718, 4_358)  # MANIFEST's line counts


def test_gsm8k_every_reference_has_a_final_number():
    args = LmDataArguments(task_name="gsm8k", data_dir=str(SHARED_LM / "gsm8k"), max_eval_samples=0)
    data = load_lm_data(args)
    assert (len(data.train), len(data.gsm8k)) == (7_473, 1_319)
    assert all(final_number(e.response) is not None for e in data.train + data.gsm8k)
    assert data.gsm8k[0].prompt.startswith("Question: ") and data.gsm8k[0].prompt.endswith("\nAnswer:")


def test_mmlu_folder_with_five_shot_prompts(tmp_path):
    (tmp_path / "flan.jsonl").write_text('{"inputs": "Q", "targets": "A"}\n')
    args = LmDataArguments(
        task_name="instruct", train_file=str(tmp_path / "flan.jsonl"), mmlu_path=str(SHARED_LM / "mmlu"),
        mmlu_shots=5, max_eval_samples=0,
    )  # fmt: skip
    data = load_lm_data(args)
    assert len(data.mmlu) == 14_042 and sum(map(len, data.mmlu_dev.values())) == 285 and len(data.mmlu_dev) == 57
    question = data.mmlu[0]
    prompt = mmlu_prompt(question, data.mmlu_dev[question.subject][:5])
    assert prompt.count("\nAnswer:") == 6 and question.subject == "abstract_algebra"
