"""LoraTrainer's cheaper per-step bookkeeping gives exactly the Trainer's results."""

import copy

import torch
from transformers import LlamaForCausalLM

from init_schemes import InitSpec
from lorakit.models.lora import add_lora
from lorakit.tasks.lm.arguments import LmLoraArguments, LmTrainArguments
from lorakit.tasks.lm.encoding import BlockDataset, PadCollator
from lorakit.training.trainer import LoraTrainer, cheap_mode_switches
from tests.conftest import tiny_llama_config


def lora_llama():
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(40))
    return add_lora(model, LmLoraArguments(lora_r=4, lora_dropout=0.0), InitSpec("A", seed=0), "CAUSAL_LM")[0]


def test_mode_switches_and_zero_grad_match_the_full_walks():
    model = lora_llama()
    dropout = next(m for name, m in model.named_modules() if name.endswith("lora_dropout.default"))
    with cheap_mode_switches(model):
        model.eval()
        assert not any(m.training for m in model.modules())
        model.train()
        assert all(m.training for m in model.modules())
        dropout.eval()  # one module left train mode behind the model's back: train() must still reach it
        model.train()
        assert dropout.training
        model(input_ids=torch.tensor([[3, 4, 5, 6]]), labels=torch.tensor([[3, 4, 5, 6]])).loss.backward()
        assert any(p.grad is not None for p in model.parameters())
        model.zero_grad()
        assert all(p.grad is None for p in model.parameters())
        twin = copy.deepcopy(model)  # the copy's overrides act on the copy, never on the original
        twin.eval()
        assert model.training and dropout.training and not any(m.training for m in twin.modules())
    assert "train" not in vars(model) and "zero_grad" not in vars(model)  # the class methods are back


def test_trainer_steps_equal_a_plain_loop_and_flops_are_counted(tmp_path):
    blocks = torch.randint(4, 40, (6, 16), generator=torch.Generator().manual_seed(1))
    args = LmTrainArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, learning_rate=1e-2, warmup_steps=0,
        lr_scheduler_type="constant", max_grad_norm=0.5, save_strategy="no", report_to=[], use_cpu=True,
        train_sampling_strategy="sequential", logging_steps=1, optim="adamw_torch",
    )  # fmt: skip
    model = lora_llama()
    trainer = LoraTrainer(model=model, args=args, train_dataset=BlockDataset(blocks), data_collator=PadCollator(0))
    trainer.train()

    reference = lora_llama()
    params = [p for p in reference.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=args.weight_decay)
    reference.train()
    for step in range(3):
        batch = blocks[2 * step : 2 * step + 2]
        reference(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.5)
        optimizer.step()
        optimizer.zero_grad()
    for (name, mine), theirs in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6), name
    non_embedding = model.num_parameters(exclude_embeddings=True)
    assert trainer.state.total_flos == 6 * non_embedding * blocks.numel()
