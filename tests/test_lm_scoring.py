"""GSM8K answer extraction and exact match, MMLU reading and letter scoring, and left-padded batching."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import lorakit.tasks.lm.gsm8k as gsm8k
from lorakit.core.errors import ConfigError
from lorakit.tasks.lm.data import SftExample
from lorakit.tasks.lm.mmlu import LETTERS, McQuestion, letter_token_ids, mmlu_accuracy, mmlu_prompt, read_mmlu_file

FINAL_NUMBERS = {
    "Natalia sold 48/2 = 24 clips in May.\nAltogether 48+24 = 72 clips.\n#### 72": "72",
    "She pays 2 * $500 = $1,000.\n#### 1,000": "1000",
    "The temperature fell by 5 degrees.\n#### -3": "-3",
    "So the answer is $18.50.": "18.50",
    "5 + 7 = 12\nQuestion: Tom has 99 apples": "12",  # the model's own next question is cut off
    "I do not know.": None,
    "#### 7 apples, not 8": "7",
}


@pytest.mark.parametrize("text", FINAL_NUMBERS)
def test_final_number(text):
    assert gsm8k.final_number(text) == FINAL_NUMBERS[text]


@pytest.mark.parametrize(
    "predicted, reference, same",
    [("18", "18.00", True), ("1000", "1000", True), ("7", "8", False), (None, "3", False), ("-3", "3", False)],
)
def test_exact_match_compares_values(predicted, reference, same):
    assert gsm8k.same_number(predicted, reference) is same


def test_gsm8k_accuracy_counts_exact_matches(monkeypatch):
    examples = [SftExample("Q1", " 2+2=4\n#### 4"), SftExample("Q2", " #### 1,200"), SftExample("Q3", " #### 5")]
    generated = ["2+2 = 4\n#### 4", "That makes $1200.", "#### 6"]
    monkeypatch.setattr(gsm8k, "generate", lambda model, tokenizer, prompts, *a: generated)
    assert gsm8k.gsm8k_accuracy(None, None, examples, 8, 16) == {"gsm8k_accuracy": 2 / 3, "gsm8k_problems": 3}


def test_batched_greedy_generation_equals_one_at_a_time(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    prompts = ["Question: 1+1?\nAnswer:", "Q: a much longer question here?\nAnswer:", "x"]
    batched = gsm8k.generate(model, tokenizer, prompts, batch_size=3, max_new_tokens=8)
    assert batched == [gsm8k.generate(model, tokenizer, [p], 1, 8)[0] for p in prompts]
    assert all(len(text) > 0 for text in batched)


class BagOfTokens(torch.nn.Module):
    """A stand-in causal LM: the logits at every position are the sum over the (unmasked) inputs of a fixed table,
    so any token of a question can plant an answer letter."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table
        self.device = torch.device("cpu")

    def forward(self, input_ids, attention_mask, position_ids=None):
        summed = (self.table[input_ids] * attention_mask[..., None]).sum(dim=1, keepdim=True)
        return type("Output", (), {"logits": summed.expand(-1, input_ids.shape[1], -1)})


def test_mmlu_letter_scoring_picks_the_planted_answer(tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    _, letter_ids = letter_token_ids(tokenizer)
    table = torch.zeros(len(tokenizer), len(tokenizer))
    for digit, letter_id in zip("1234", letter_ids, strict=True):
        table[tokenizer.convert_tokens_to_ids(digit), letter_id] = 5.0  # digit k in a question plants letter k
    answers = [2, 0, 3, 1, 2]
    questions = [
        McQuestion(f"Which is right{'?' * i} Hint {answer + 1}", ("w", "x", "y", "z"), answer, "logic")
        for i, answer in enumerate(answers)
    ]
    model = BagOfTokens(table)
    assert mmlu_accuracy(model, tokenizer, questions, {}, 0, 2, 512) == {"mmlu_accuracy": 1.0, "mmlu_questions": 5}
    wrong = [McQuestion(q.question, q.choices, (q.answer + 1) % 4, q.subject) for q in questions]
    assert mmlu_accuracy(model, tokenizer, wrong, {}, 0, 2, 512)["mmlu_accuracy"] == 0.0


def test_letter_tokens_after_answer(tiny_llama_dir):
    shared, letter_ids = letter_token_ids(AutoTokenizer.from_pretrained(tiny_llama_dir))
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    assert tokenizer.decode(shared) == " " and tokenizer.decode(letter_ids) == "ABCD"


def test_mmlu_prompt_with_shots():
    shot = McQuestion("2+2?", ("1", "4", "6", "8"), 1, "elementary_mathematics")
    question = McQuestion("3+3?", ("1", "2", "6", "9"), 2, "elementary_mathematics")
    prompt = mmlu_prompt(question, [shot])
    assert prompt.startswith(
        "The following are multiple choice questions (with answers) about elementary mathematics."
    )
    assert "2+2?\nA. 1\nB. 4\nC. 6\nD. 8\nAnswer: B\n\n3+3?\nA. 1\nB. 2\nC. 6\nD. 9\nAnswer:" in prompt
    assert prompt.endswith("Answer:")


def test_mmlu_files_in_both_formats(tmp_path):
    (tmp_path / "astronomy_test.csv").write_text('"What is, in short, the Sun?",star,planet,moon,comet,A\n')
    (tmp_path / "q.jsonl").write_text('{"question": "Q", "choices": ["a", "b", "c", "d"], "answer": 3}\n')
    [from_csv] = read_mmlu_file(tmp_path / "astronomy_test.csv", "astronomy")
    [from_jsonl] = read_mmlu_file(tmp_path / "q.jsonl")
    assert (from_csv.question, from_csv.answer, from_csv.subject) == ("What is, in short, the Sun?", 0, "astronomy")
    assert (from_jsonl.choices, LETTERS[from_jsonl.answer]) == (("a", "b", "c", "d"), "D")


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("short.csv", "Q,a,b,c,A\n", "MMLU CSV rows have 6 fields"),
        ("bad.csv", "Q,a,b,c,d,E\n", "MMLU answer 'E' is not one of A-D"),
        ("nochoices.jsonl", '{"question": "Q", "answer": "A"}\n', "need question, 4 choices"),
    ],
)
def test_bad_mmlu_rows(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_mmlu_file(tmp_path / name)
