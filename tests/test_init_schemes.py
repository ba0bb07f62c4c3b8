"""Init[A] / Init[B]: BA = 0 at step 0, which factor moves first, the random factor's variance, reproducibility."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import BertForSequenceClassification

from init_schemes import INIT_SCHEMES, InitSpec, apply_init, init_a, init_b, random_matrix_variance
from init_schemes.schemes import lora_factors
from lorakit.models.arguments import LoraArguments
from lorakit.models.lora import add_lora
from tests.conftest import tiny_bert_config


def tiny_classifier(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(40)).eval()


def lora_classifier(scheme: str, seed: int = 0, **lora):
    model, record = add_lora(tiny_classifier(), LoraArguments(**lora), InitSpec(scheme, seed=seed), "SEQ_CLS")
    return model.eval(), record


def factor_tensors(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


INPUTS = {
    "input_ids": torch.tensor([[2, 5, 9, 11, 3], [2, 7, 8, 3, 0]]),
    "attention_mask": torch.tensor([[1] * 5, [1] * 4 + [0]]),
}


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_outputs_at_step_zero_equal_the_base_model(scheme):
    model, _ = lora_classifier(scheme)
    with torch.no_grad():
        with_lora = model(**INPUTS).logits
        with model.disable_adapter():
            base = model(**INPUTS).logits
    assert torch.equal(with_lora, base)
    products = [f.b.float() @ f.a.float() for f in lora_factors(model)]
    assert products and all(torch.count_nonzero(p) == 0 for p in products)


@pytest.mark.parametrize("scheme, moved, still", [("A", "lora_B", "lora_A"), ("B", "lora_A", "lora_B")])
def test_one_step_moves_only_the_zero_factor(scheme, moved, still):
    """The docstrings' contract: Init[A] has B = 0, Init[B] has A = 0; the first step moves only the zero factor."""
    assert "B = 0" in init_a.__doc__ and "A = 0" in init_b.__doc__
    model, _ = lora_classifier(scheme)
    model.train()
    before = factor_tensors(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model(**INPUTS, labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    after = factor_tensors(model)
    for name in before:
        change = (after[name] - before[name]).abs().max().item()
        if still in name:
            assert change == 0.0, name
        elif moved in name:
            assert change > 0.0, name


def big_lora_layer(scheme: str, distribution: str, rank: int = 64, width: int = 2048):
    model = get_peft_model(nn.Sequential(nn.Linear(width, width)), LoraConfig(r=rank, target_modules=["0"]))
    apply_init(model, InitSpec(scheme, distribution, seed=1))
    (factors,) = lora_factors(model)
    return factors


@pytest.mark.parametrize("distribution", ["kaiming_uniform", "normal"])
def test_random_factor_variance(distribution):
    rank, width = 64, 2048
    a_init = big_lora_layer("A", distribution, rank, width)
    assert a_init.a.var().item() == pytest.approx(1 / (3 * width), rel=0.05)
    assert torch.count_nonzero(a_init.b) == 0
    b_init = big_lora_layer("B", distribution, rank, width)
    assert b_init.b.var().item() == pytest.approx(1 / (3 * rank), rel=0.05)
    assert torch.count_nonzero(b_init.a) == 0
    if distribution == "kaiming_uniform":  # U(±1/√fan_in)
        assert a_init.a.abs().max().item() <= width**-0.5
        assert b_init.b.abs().max().item() <= rank**-0.5


def test_scale_multiplies_the_standard_deviation():
    model = get_peft_model(nn.Sequential(nn.Linear(1024, 1024)), LoraConfig(r=32, target_modules=["0"]))
    record = apply_init(model, InitSpec("A", "normal", scale=2.0, seed=3))
    (factors,) = lora_factors(model)
    assert factors.a.var().item() == pytest.approx(4 / (3 * 1024), rel=0.05)
    assert record["variance_by_fan_in"] == {"1024": random_matrix_variance(1024, 2.0)}


@pytest.mark.parametrize("scheme", ["A", "B"])
def test_same_seed_gives_bit_identical_adapters(scheme):
    first, _ = lora_classifier(scheme, seed=7)
    torch.randn(1000)  # model loading consuming random numbers must not matter
    second, _ = lora_classifier(scheme, seed=7)
    third, _ = lora_classifier(scheme, seed=8)
    a, b, c = factor_tensors(first), factor_tensors(second), factor_tensors(third)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)


@pytest.mark.parametrize(
    "scheme, random_name, zero_name, variance",
    [("A", "lora_embedding_A", "lora_embedding_B", 1 / 3), ("B", "lora_embedding_B", "lora_embedding_A", 1 / 24)],
)
def test_embedding_lora_layers(scheme, random_name, zero_name, variance):
    """Embedding A is a lookup hit by one-hot inputs (fan-in 1); embedding B is (dim, r) with fan-in r."""
    model = get_peft_model(nn.Sequential(nn.Embedding(20000, 64)), LoraConfig(r=8, target_modules=["0"]))
    record = apply_init(model, InitSpec(scheme, seed=0))
    params = dict(model.named_parameters())
    random_factor = next(p for n, p in params.items() if random_name in n)
    zero_factor = next(p for n, p in params.items() if zero_name in n)
    assert torch.count_nonzero(zero_factor) == 0
    assert random_factor.var().item() == pytest.approx(variance, rel=0.05)
    assert record["random_factor"] == scheme


def test_record_names_the_scheme_and_its_variance():
    _, record = lora_classifier("B", seed=5)
    assert record["scheme"] == "B" and record["seed"] == 5 and record["distribution"] == "kaiming_uniform"
    assert record["random_factor"] == "B" and record["zero_factor"] == "A"
    assert record["variance_by_fan_in"] == {"8": pytest.approx(1 / 24)}


def test_peft_schemes_stay_reachable_by_name():
    model, record = lora_classifier("gaussian")
    assert record["applied_by"] == "peft"
    a = next(p for n, p in model.named_parameters() if "lora_A" in n)
    assert a.std().item() == pytest.approx(1 / 8, rel=0.25)  # PEFT's gaussian: A ~ N(0, 1/r)


def test_unknown_scheme_is_rejected():
    with pytest.raises(ValueError, match="lora_init: unknown init scheme 'C'"):
        InitSpec("C")
    assert set(INIT_SCHEMES) == {"A", "B"}


def test_freeze_lora_a_keeps_a_frozen_under_init_a():
    model, _ = lora_classifier("A", freeze_lora_A=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
