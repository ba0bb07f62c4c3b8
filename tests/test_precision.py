"""Mixed precision over 16-bit bases: no bf16 autocast where it would only re-cast the LoRA factors, the frozen
embedding of a quantized model back in 16 bits, and batches of full blocks without an attention mask."""

import pytest
import torch
from transformers import LlamaForCausalLM

from init_schemes import InitSpec
from lorakit.models.lora import add_lora
from lorakit.tasks.lm.arguments import LmLoraArguments
from lorakit.tasks.lm.encoding import IGNORE, PadCollator
from lorakit.training.arguments import LoraTrainingArguments
from lorakit.training.precision import base_computes_in_16_bits
from lorakit.training.trainer import LoraTrainer
from tests.conftest import tiny_llama_config


def lora_llama(dtype: torch.dtype, **lora):
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(40)).to(dtype)
    return add_lora(model, LmLoraArguments(lora_r=4, **lora), InitSpec("A", seed=0), "CAUSAL_LM")[0]


def arguments(tmp_path, requested: str, autocast: str = "auto") -> LoraTrainingArguments:
    args = LoraTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, autocast=autocast)
    args.mixed_precision = requested  # what --bf16/--fp16 set; this CPU refuses the flags themselves
    return args


@pytest.mark.parametrize(
    "dtype, autocast, expected",
    [
        (torch.bfloat16, "auto", "no"),  # the base computes in bf16 already
        (torch.float16, "auto", "no"),
        (torch.float32, "auto", "bf16"),  # fp32 base: autocast does the real work
        (torch.bfloat16, "on", "bf16"),
        (torch.float32, "off", "no"),
    ],
)
def test_bf16_autocast_only_over_a_base_that_needs_it(dtype, autocast, expected, tmp_path):
    model = lora_llama(dtype)
    args = arguments(tmp_path, "bf16", autocast)
    assert base_computes_in_16_bits(model) == (dtype != torch.float32)
    assert args.mixed_precision_for(model) == expected
    assert args.training_record(model)["mixed_precision"] == expected


def test_an_8_bit_or_unknown_base_layer_keeps_autocast():
    model = lora_llama(torch.bfloat16)
    layer = next(m.base_layer for m in model.modules() if hasattr(m, "lora_A"))
    layer.weight = torch.nn.Parameter(torch.zeros_like(layer.weight, dtype=torch.int8), requires_grad=False)
    assert not base_computes_in_16_bits(model)  # 8-bit computes in its input's dtype: fp32 in a k-bit model
    del layer.weight
    assert not base_computes_in_16_bits(model)  # no weight to read (GPTQ-like layers): not known to be 16-bit


def test_fp16_and_no_mixed_precision_are_left_as_requested(tmp_path):
    model = lora_llama(torch.float16)
    assert arguments(tmp_path, "fp16").mixed_precision_for(model) == "fp16"  # loss scaling still needed
    assert arguments(tmp_path, "no").mixed_precision_for(model) == "no"


def test_the_trainer_runs_the_resolved_precision(tmp_path):
    trainer = LoraTrainer(model=lora_llama(torch.bfloat16), args=arguments(tmp_path, "bf16"))
    assert trainer.accelerator.mixed_precision == "no"
    assert trainer.accelerator.native_amp is False  # the forward is not wrapped in autocast


def test_a_bad_autocast_value_is_refused(tmp_path):
    with pytest.raises(ValueError, match="autocast: must be auto, on or off"):
        LoraTrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, autocast="yes")


def quantized_looking_llama(tie: bool) -> LlamaForCausalLM:
    """A bf16 Llama after prepare_model_for_kbit_training's fp32 upcast, flagged as 4-bit (no CUDA here)."""
    torch.manual_seed(0)
    config = tiny_llama_config(40)
    config.tie_word_embeddings = tie
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.float()
    model.is_loaded_in_4bit = True
    return model


def test_the_restored_embedding_leaves_the_outputs_bit_equal():
    model = quantized_looking_llama(tie=False)
    ids = torch.randint(3, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    peft_model = add_lora(model, LmLoraArguments(lora_r=4), InitSpec("A", seed=0), "CAUSAL_LM")[0].eval()
    assert peft_model.get_base_model().get_input_embeddings().weight.dtype == torch.bfloat16
    with torch.no_grad():
        assert torch.equal(peft_model(input_ids=ids).logits, expected)


@pytest.mark.parametrize(
    "tie, modules_to_save, expected",
    [(False, [], torch.bfloat16), (True, [], torch.float32), (False, ["embed_tokens"], torch.float32)],
)
def test_a_quantized_models_frozen_embedding_goes_back_to_16_bits(tie, modules_to_save, expected):
    model = quantized_looking_llama(tie)
    table = model.get_input_embeddings().weight.detach().clone()
    lora_args = LmLoraArguments(lora_r=4, modules_to_save=modules_to_save)
    peft_model = add_lora(model, lora_args, InitSpec("A", seed=0), "CAUSAL_LM")[0]
    embedding = peft_model.get_base_model().get_input_embeddings()
    weight = embedding.original_module.weight if modules_to_save else embedding.weight
    assert weight.dtype == expected
    assert torch.equal(weight.float(), table)  # the values came from bf16: the cast back is exact
    assert peft_model.get_base_model().lm_head.weight.dtype == torch.float32 or tie


def test_full_blocks_carry_no_attention_mask_and_padded_ones_do():
    collate = PadCollator(pad_token_id=0)
    full = collate([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9, 4], "labels": [8, 9, 4]}])
    assert set(full) == {"input_ids", "labels"}
    padded = collate([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8], "labels": [8]}])
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert padded["labels"].tolist() == [[5, 6, 7], [8, IGNORE, IGNORE]]
