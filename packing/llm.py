"""Packed run_llm.py: K configurations of one sweep trained together on one frozen causal LM.

As for run_glue.py (`packing.glue`), the configurations may differ in learning rate, init scheme and LoRA+ ratio
only. The frozen base runs once per step for all K adapters: on a 4-bit base its weights are dequantized once for
the whole pack, not once per configuration. Each configuration's loss is the model's own causal-LM loss on its
slice (labels shifted, padding ignored, summed over the tokens of the whole accumulated batch when the single run's
Trainer does so).

Evaluation: `before` is taken once, since every configuration starts at BA = 0 and so computes the base model's
outputs exactly. Held-out evaluations during training are packed (loss and perplexity, as a single run's Trainer
computes them). The final evaluation (perplexity, GSM8K generation, MMLU) runs each configuration in turn as its
plain PEFT model, its forward under the autocast a single run's Trainer gives it (see `as_prepared`).
"""

import contextlib
import copy
import math

import torch
from accelerate.utils import convert_outputs_to_fp32, get_mixed_precision_context_manager
from transformers import set_seed

import run_llm
from finetune.lm_eval import evaluate_task
from finetune.modeling import add_lora, load_causal_lm
from packing.glue import default_pack_dir
from packing.layers import unpacked
from packing.probe import longest, probe_args
from packing.results import PackResults, train_pack
from packing.trainer import PackedModel, PackedTrainer, check_packable, initial_states, pack_for_training


class PackedCausalLM(PackedModel):
    """A packed causal LM: the K slices' losses, each computed by the model's own loss function."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, num_items_in_batch=None, **kwargs):
        inputs = self.repeated({"input_ids": input_ids, "attention_mask": attention_mask})
        logits = self.packed(**inputs).logits
        if labels is None:
            return {"logits": logits.view(self.k, len(input_ids), *logits.shape[1:])}
        losses = torch.stack(
            [
                self.packed.loss_function(
                    logits=slice_logits,
                    labels=labels,
                    vocab_size=logits.shape[-1],
                    num_items_in_batch=num_items_in_batch,
                )
                for slice_logits in logits.chunk(self.k)
            ]
        )
        return {"loss": self.training_loss(losses), "losses": losses.detach()}


@contextlib.contextmanager
def as_prepared(model, accelerator):
    """`model` (a PEFT model) as `accelerator.prepare` leaves a single run's model, for the duration: its own forward
    under the mixed-precision autocast, with fp32 outputs. Generation calls the base model's forward, which a single
    run leaves alone too."""
    if not accelerator.native_amp:
        yield model
        return
    saved = vars(model).get("forward")
    autocast = get_mixed_precision_context_manager(accelerator.native_amp, accelerator.autocast_handler)
    model.forward = convert_outputs_to_fp32(autocast(model.forward))
    try:
        yield model
    finally:
        del model.forward
        if saved is not None:
            model.forward = saved


def summary(state: dict) -> str:
    return run_llm.summary_line(state["before"], state["final"])


@torch.no_grad()
def heldout_losses(trainer, dataset) -> list[float]:
    """Each adapter's held-out loss as a single run's Trainer evaluates it: each batch's mean token loss, averaged
    over the batches weighted by their number of examples."""
    wrapper = trainer.model
    wrapper.eval()
    total, count = torch.zeros(wrapper.k, dtype=torch.float64), 0
    for batch in trainer.get_eval_dataloader(dataset):
        losses = wrapper(**batch)["losses"]
        total += len(batch["input_ids"]) * losses.double().cpu()
        count += len(batch["input_ids"])
    wrapper.train()
    return (total / max(count, 1)).tolist()


def prepare_pack(argvs: list[list[str]]) -> tuple:
    """The K configurations' arguments (checked: they may share a pack), the data (read once: the same for all), its
    encoding, the tokenizer and the model path."""
    first, data, encoded, tokenizer, model_path = run_llm.prepare(argvs[0])
    all_args = [first, *(run_llm.parse(argv) for argv in argvs[1:])]
    check_packable(all_args)
    return all_args, data, encoded, tokenizer, model_path


def load_pack(all_args: list[tuple], model_path: str) -> tuple:
    """The PEFT model as each single run builds it (not packed yet), each configuration's starting adapter and init
    record."""
    model_args, lora_args, _, train_args = all_args[0]
    set_seed(train_args.seed)
    model = load_causal_lm(model_path, model_args, train_args.gradient_checkpointing)
    model, _ = add_lora(model, lora_args, train_args.init_spec(), "CAUSAL_LM")
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        model.to(train_args.device)
    states, records = initial_states(model, all_args)
    return model, states, records


def pack_trainer(model, all_args, states, tokenizer, encoded, pack_args, **kwargs) -> PackedTrainer:
    """`model` packed with `states`, in a PackedTrainer with `pack_args` (`kwargs`: datasets and hooks)."""
    packed, groups, loss_scaling = pack_for_training(model, all_args, states)
    wrapper = PackedCausalLM(packed, len(all_args), pack_args.divergence_loss_threshold)
    return PackedTrainer(
        model=wrapper, args=pack_args, data_collator=encoded.collate, processing_class=tokenizer,
        adapter_groups=groups, loss_scaling=loss_scaling, **kwargs,
    )  # fmt: skip


def probe_trainer(argvs: list[list[str]], scratch: str) -> PackedTrainer:
    """A pack of `argvs` set to train a few steps on its longest examples (see `packing.probe`)."""
    all_args, _, encoded, tokenizer, model_path = prepare_pack(argvs)
    model, states, _ = load_pack(all_args, model_path)
    args = probe_args(all_args[0][3], scratch)
    train = longest(encoded.train, args.train_batch_size)
    held_out = longest(encoded.heldout, args.eval_batch_size) if encoded.heldout is not None else None
    return pack_trainer(model, all_args, states, tokenizer, encoded, args, train_dataset=train, eval_dataset=held_out)


def run_packed(argvs: list[list[str]], pack_dir: str | None = None) -> int:
    """Train run_llm.py's K configurations `argvs` as one pack (checkpoints in `pack_dir`, by default a folder
    beside the first configuration's); 0 when every configuration ended done or diverged."""
    all_args, data, encoded, tokenizer, model_path = prepare_pack(argvs)
    model, states, records = load_pack(all_args, model_path)
    data_args, train_args = all_args[0][2], all_args[0][3]
    configs = [
        run_llm.run_record(args, data, encoded, model, model_path, record)
        for args, record in zip(all_args, records, strict=True)
    ]
    pack_dir = pack_dir or default_pack_dir([args[3].output_dir for args in all_args])
    results = PackResults(all_args, configs, pack_dir, "loss", higher_is_better=False)
    batch, task = train_args.per_device_eval_batch_size, (encoded, data, data_args)
    results.record("before", evaluate_task(model, tokenizer, *task, batch))  # BA = 0: the base model, for all

    def evaluate(step: int, epoch: float | None) -> dict:
        losses = heldout_losses(trainer, encoded.heldout)
        rows = {
            i: [{"eval_loss": losses[i], "eval_perplexity": math.exp(min(losses[i], 700))}] for i in trainer.model.live
        }
        return results.add_evaluations(rows, step, epoch)

    def final_metrics() -> dict[int, dict]:
        finals = {}
        for index in trainer.model.live:
            with unpacked(model, index) as single, as_prepared(single, trainer.accelerator):
                finals[index] = evaluate_task(single, tokenizer, *task, batch)
        return finals

    pack_args = copy.copy(train_args)  # checkpoints go to the pack's own folder, beside its members' run folders
    pack_args.output_dir = pack_dir
    trainer = pack_trainer(
        model, all_args, states, tokenizer, encoded, pack_args, train_dataset=encoded.train,
        eval_dataset=encoded.heldout, on_divergence=results.on_divergence, evaluate_fn=evaluate,
    )  # fmt: skip
    train_pack(trainer, results, final_metrics, model, tokenizer, summary)
    return 0
