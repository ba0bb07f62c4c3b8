"""Packed LoRA (issue 6, first part): K adapters on one frozen base give each adapter exactly its single model's
outputs, gradients and AdamW trajectory, and one adapter's non-finite values never reach the others."""

import copy

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from init_schemes import InitSpec
from lorakit.models.arguments import LoraArguments
from lorakit.models.lora import add_lora
from lorakit.packing.layers import PackedLoraLinear, adapter_parameters, pack_peft_models
from loraplus.groups import loraplus_param_groups
from tests.conftest import sentence

CONFIGS = [("A", 1e-3, 1, 1), ("B", 1e-3, 4, 2), ("A", 3e-3, 4, 3), ("B", 3e-3, 1, 4)]  # init, lr, ratio, seed


def single_models(tiny_bert_dir) -> list:
    models = []
    for scheme, _, _, seed in CONFIGS:
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=2)
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        lora = LoraArguments(lora_r=4, lora_dropout=0.0, lora_target_modules=["query", "value"])
        model, _ = add_lora(model, lora, InitSpec(scheme, seed=seed), "SEQ_CLS")
        models.append(model.train())
    return models


@pytest.fixture
def batch(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    encoded = tokenizer([sentence(i, 3 + i % 4) for i in range(6)], padding=True, return_tensors="pt")
    return dict(encoded), torch.tensor([i % 2 for i in range(6)])


def packed_inputs(inputs: dict, k: int) -> dict:
    return {name: value.repeat(k, *[1] * (value.ndim - 1)) for name, value in inputs.items()}


def per_adapter_losses(packed, inputs, labels, k):
    logits = packed(**packed_inputs(inputs, k)).logits.view(k, len(labels), -1)
    return torch.stack([torch.nn.functional.cross_entropy(logits[i], labels) for i in range(k)]), logits


def test_packed_outputs_and_gradients_equal_the_single_models(tiny_bert_dir, batch):
    inputs, labels = batch
    singles = single_models(tiny_bert_dir)
    for model in singles:  # move every factor off zero, so the check is not trivial
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_" in name:
                    param.add_(0.05 * torch.randn_like(param))
    packed = pack_peft_models([copy.deepcopy(m) for m in singles])
    losses, logits = per_adapter_losses(packed, inputs, labels, len(singles))
    losses.sum().backward()
    for index, model in enumerate(singles):
        output = model(**inputs)
        torch.testing.assert_close(logits[index], output.logits, rtol=1e-5, atol=1e-6)
        torch.nn.functional.cross_entropy(output.logits, labels).backward()
        single = {n: p for n, p in model.named_parameters() if p.requires_grad}
        ours = adapter_parameters(packed, index)
        assert len(ours) == len(single)
        for (_, packed_param), (_, single_param) in zip(ours, single.items(), strict=True):
            torch.testing.assert_close(packed_param.grad, single_param.grad, rtol=1e-5, atol=1e-7)


def test_twenty_adamw_steps_follow_the_single_runs(tiny_bert_dir, batch):
    inputs, labels = batch
    singles = single_models(tiny_bert_dir)
    packed = pack_peft_models([copy.deepcopy(m) for m in singles])
    single_optimizers = [
        torch.optim.AdamW(loraplus_param_groups(m, lr=lr, loraplus_lr_ratio=ratio), lr=lr)
        for m, (_, lr, ratio, _) in zip(singles, CONFIGS, strict=True)
    ]
    groups = []
    for index, (_, lr, ratio, _) in enumerate(CONFIGS):
        for name, param in adapter_parameters(packed, index):
            groups.append({"params": [param], "lr": lr * ratio if ".lora_B." in name or param.ndim == 1 else lr})
    packed_optimizer = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.0)
    for _ in range(20):
        losses, _ = per_adapter_losses(packed, inputs, labels, len(singles))
        packed_optimizer.zero_grad()
        losses.sum().backward()
        packed_optimizer.step()
        for model, optimizer in zip(singles, single_optimizers, strict=True):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(**inputs).logits, labels).backward()
            optimizer.step()
    final, _ = per_adapter_losses(packed, inputs, labels, len(singles))
    for index, model in enumerate(singles):
        expected = torch.nn.functional.cross_entropy(model(**inputs).logits, labels)
        torch.testing.assert_close(final[index], expected, rtol=1e-5, atol=1e-6)
        trained = [p for p in model.parameters() if p.requires_grad]
        for (name, packed_param), single_param in zip(adapter_parameters(packed, index), trained, strict=True):
            error = (packed_param - single_param).norm() / single_param.norm()
            # Norm-wise. The base runs on 4× the rows, so fp32 sums round differently (gradients agree to 1e-5, see
            # above); Adam then magnifies that in entries whose gradient is near zero. Worst seen: 5.5e-5, a head bias.
            assert error <= 1e-4, name


def test_a_non_finite_adapter_stays_in_its_slice(tiny_bert_dir, batch):
    inputs, labels = batch
    singles = single_models(tiny_bert_dir)
    packed = pack_peft_models([copy.deepcopy(m) for m in singles])
    for name, param in adapter_parameters(packed, 2):
        if ".lora_B." in name:
            with torch.no_grad():
                param.fill_(float("inf"))
    losses, logits = per_adapter_losses(packed, inputs, labels, len(singles))
    losses.sum().backward()
    assert not torch.isfinite(losses[2])
    for index in (0, 1, 3):
        torch.testing.assert_close(logits[index], singles[index](**inputs).logits, rtol=1e-5, atol=1e-6)
        assert all(torch.isfinite(p.grad).all() for _, p in adapter_parameters(packed, index))


def test_a_packed_layer_keeps_its_state_beside_its_adapters():
    """A k-bit base is never moved as a whole (the Trainer and accelerate leave it where it was loaded), so a packed
    layer must be built where its adapters are: here the meta device stands in for a GPU."""
    with torch.device("meta"):
        base = torch.nn.Linear(8, 6)
        factors = [(torch.zeros(2, 8), torch.zeros(6, 2)) for _ in range(3)]
    layer = PackedLoraLinear(base, factors, scaling=[2.0] * 3)
    assert {t.device.type for t in [*layer.parameters(), *layer.buffers()]} == {"meta"}
    assert "scaling" not in layer.state_dict()  # derived from alpha / r: not a checkpoint's business
