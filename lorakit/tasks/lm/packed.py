"""The lm task in a pack: K causal-LM adapters on one frozen base, each with its own loss, and their evaluations.

The frozen base runs once per step for all K adapters: on a 4-bit base its weights are dequantized once for the
whole pack, not once per configuration. Each configuration's loss is the model's own causal-LM loss on its slice
(labels shifted, padding ignored, summed over the tokens of the whole accumulated batch when the single run's
Trainer does so). Held-out evaluations during training are packed (loss and perplexity, as a single run's Trainer
computes them); the final evaluation runs each configuration in turn as its plain PEFT model (`as_prepared`).
"""

import contextlib

import torch
from accelerate.utils import convert_outputs_to_fp32, get_mixed_precision_context_manager

from lorakit.packing.model import PackedModel


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
