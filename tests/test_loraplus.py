"""LoRA+ groups: the pinned rule on a tiny RoBERTa classifier, the partition invariant, per-group step sizes."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.optimizers import create_loraplus_optimizer as peft_create_loraplus_optimizer
from torch import nn
from transformers import RobertaConfig, RobertaForSequenceClassification, TrainingArguments
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from init_schemes import InitSpec
from lorakit.models.arguments import LoraArguments
from lorakit.models.lora import add_lora
from lorakit.training.arguments import LoraTrainingArguments
from lorakit.training.trainer import LoraTrainer
from loraplus import assert_partition, create_loraplus_optimizer
from loraplus import loraplus_param_groups as groups_of

PREFIX = "base_model.model."
LAYER = "roberta.encoder.layer.0.attention.self."
HEAD = "classifier.modules_to_save.default.out_proj."
LORA_A = [f"{LAYER}query.lora_A.default.weight", f"{LAYER}value.lora_A.default.weight"]
LORA_B = [f"{LAYER}query.lora_B.default.weight", f"{LAYER}value.lora_B.default.weight"]


def tiny_roberta_classifier(scheme: str = "A"):
    """RoBERTa, LoRA r=4 on query/value, head trained as in the LoRA+ reference (out_proj trained, dense frozen)."""
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=40, num_labels=3,
    )  # fmt: skip
    model = RobertaForSequenceClassification(config)
    lora = LoraArguments(lora_r=4, modules_to_save=["classifier"])
    return add_lora(model, lora, InitSpec(scheme), "SEQ_CLS")[0]


def group_map(groups) -> dict[str, list[str]]:
    return {g["name"]: [n.removeprefix(PREFIX) for n in g["param_names"]] for g in groups}


def test_reference_rule_is_pinned():
    groups = groups_of(tiny_roberta_classifier(), lr=1e-3, loraplus_lr_ratio=16, weight_decay=0.1)
    assert group_map(groups) == {
        "A": [*LORA_A, f"{HEAD}weight"],
        "B": LORA_B,
        "B_no_decay": [f"{HEAD}bias"],
    }
    hyper = {g["name"]: (g["lr"], g["weight_decay"]) for g in groups}
    assert hyper == {"A": (1e-3, 0.1), "B": (pytest.approx(16e-3), 0.1), "B_no_decay": (pytest.approx(16e-3), 0.0)}


def test_head_option_is_pinned():
    groups = groups_of(tiny_roberta_classifier(), lr=1e-3, loraplus_lr_ratio=16, weight_decay=0.1, head_group=True)
    assert group_map(groups) == {"A": LORA_A, "B": LORA_B, "head": [f"{HEAD}weight"], "head_no_decay": [f"{HEAD}bias"]}
    hyper = {g["name"]: (g["lr"], g["weight_decay"]) for g in groups}
    assert hyper["head"] == (1e-3, 0.1) and hyper["head_no_decay"] == (1e-3, 0.0)


def test_membership_and_lrs_match_peft_port_of_the_reference():
    model = tiny_roberta_classifier()
    ours = groups_of(model, lr=1e-3, loraplus_lr_ratio=8)
    theirs = peft_create_loraplus_optimizer(model, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=8).param_groups

    def lr_by_param(groups):
        return {id(p): g["lr"] for g in groups for p in g["params"]}

    assert lr_by_param(ours) == pytest.approx(lr_by_param(theirs))


def test_partition_assert_fires_on_broken_groupings():
    model = tiny_roberta_classifier()
    groups = groups_of(model, lr=1e-3, loraplus_lr_ratio=4)
    dropped = [{**g, "params": g["params"][1:]} if g["name"] == "A" else g for g in groups]
    with pytest.raises(AssertionError, match="missing .*query.lora_A"):
        assert_partition(model, dropped)
    doubled = [*groups, {"name": "again", "params": groups[0]["params"][:1]}]
    with pytest.raises(AssertionError, match="in several groups"):
        assert_partition(model, doubled)
    frozen = next(p for n, p in model.named_parameters() if not p.requires_grad)
    with pytest.raises(AssertionError, match="1 frozen or foreign"):
        assert_partition(model, [*groups, {"name": "frozen", "params": [frozen]}])


def test_one_adamw_step_moves_b_by_lr_times_ratio_and_a_by_lr():
    model = tiny_roberta_classifier()
    with torch.no_grad():  # non-zero init for both factors, so both get gradients
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    lr, ratio = 1e-4, 16
    optimizer = create_loraplus_optimizer(
        model, torch.optim.AdamW, lr=lr, loraplus_lr_ratio=ratio, weight_decay=0.0, eps=1e-12
    )  # a tiny eps makes Adam's first step exactly lr·sign(grad), even where the gradient is small
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.tensor([[0, 5, 7, 9, 2], [0, 6, 8, 2, 1]])
    model(input_ids=ids, labels=torch.tensor([0, 2])).loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        if "lora_" in name:
            step = (param.detach() - before[name]).abs().flatten()
            expected = lr * ratio if "lora_B" in name else lr
            assert step.median().item() == pytest.approx(expected, rel=0.05), name


def test_weight_decay_reaches_only_decayed_groups():
    model = tiny_roberta_classifier()
    optimizer = create_loraplus_optimizer(model, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=2, weight_decay=0.3)
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay == {"A": 0.3, "B": 0.3, "B_no_decay": 0.0}
    # PEFT's own helper drops the configured decay; PEFT's keyword is accepted as an alias.
    alias = create_loraplus_optimizer(
        model, torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=2, loraplus_weight_decay=0.2
    )
    assert {g["name"]: g["weight_decay"] for g in alias.param_groups} == {"A": 0.2, "B": 0.2, "B_no_decay": 0.0}
    # And the decay acts: with zero gradients, decayed weights shrink by lr·wd, biases do not move.
    bias = dict(model.named_parameters())[f"{PREFIX}{HEAD}bias"]
    weight = dict(model.named_parameters())[f"{PREFIX}{HEAD}weight"]
    bias_before, weight_before = bias.detach().clone(), weight.detach().clone()
    for param in model.parameters():
        param.grad = torch.zeros_like(param) if param.requires_grad else None
    optimizer.step()
    assert torch.equal(bias.detach(), bias_before)
    assert torch.allclose(weight.detach(), weight_before * (1 - 1e-3 * 0.3))


def test_embedding_lora_goes_to_the_embedding_group_and_empty_groups_are_dropped():
    model = get_peft_model(nn.Sequential(nn.Embedding(30, 8), nn.Linear(8, 8)), LoraConfig(r=2, target_modules=["0"]))
    groups = groups_of(model, lr=1e-3, loraplus_lr_ratio=4, loraplus_lr_embedding=5e-6)
    assert [g["name"] for g in groups] == ["embedding"]
    assert groups[0]["lr"] == 5e-6 and len(groups[0]["params"]) == 2


def test_trainer_uses_loraplus_groups_only_when_a_ratio_is_set(tmp_path):
    model = tiny_roberta_classifier()
    args = LoraTrainingArguments(output_dir=str(tmp_path), learning_rate=1e-3, loraplus_lr_ratio=16, report_to=[])
    optimizer = LoraTrainer(model=model, args=args).create_optimizer()
    assert [g["name"] for g in optimizer.param_groups] == ["A", "B", "B_no_decay"]
    assert optimizer.param_groups[1]["lr"] == pytest.approx(16e-3)
    plain = LoraTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), report_to=[]))
    assert all("name" not in g for g in plain.create_optimizer().param_groups)


def test_ratio_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="loraplus_lr_ratio: must be > 0"):
        LoraTrainingArguments(output_dir=str(tmp_path), loraplus_lr_ratio=0)


def test_a_trainable_rmsnorm_weight_gets_no_weight_decay_unlike_the_reference():
    """The one documented difference from the LoRA+ reference (loraplus/groups.py): RMSNorm weights are not decayed."""
    model = torch.nn.ModuleDict({"input_layernorm": LlamaRMSNorm(8), "proj": torch.nn.Linear(8, 8)})
    groups = {g["name"]: g for g in groups_of(model, lr=1e-3, loraplus_lr_ratio=4, weight_decay=0.1)}
    assert groups["B_no_decay"]["param_names"] == ["input_layernorm.weight", "proj.bias"]
    assert groups["B_no_decay"]["weight_decay"] == 0.0 and groups["B_no_decay"]["lr"] == pytest.approx(4e-3)
    assert groups["A"]["param_names"] == ["proj.weight"] and groups["A"]["weight_decay"] == 0.1
