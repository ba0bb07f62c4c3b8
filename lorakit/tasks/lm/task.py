"""The lm task: a causal LM finetuned on plain text in blocks (the embedded Shakespeare plays, a folder of .txt,
WikiText-2) or on prompt → response examples (GSM8K, instructions scored on MMLU), measured before and after
training on the same examples. Its command-line script is run_llm.py."""

import math

from transformers import AutoModelForCausalLM

from lorakit.core.errors import ConfigError
from lorakit.models.loading import (
    check_context,
    load_causal_lm,
    load_config,
    load_tokenizer,
    resolve_model_path,
)
from lorakit.models.lora import check_lora_shapes
from lorakit.packing.layers import unpacked
from lorakit.tasks.base import Prepared, RunArguments, Task
from lorakit.tasks.lm.arguments import LmLoraArguments, LmModelArguments, LmTrainArguments
from lorakit.tasks.lm.data import LmDataArguments, load_lm_data
from lorakit.tasks.lm.encoding import encode_task
from lorakit.tasks.lm.evaluation import PerplexityCallback, evaluate_task
from lorakit.tasks.lm.packed import PackedCausalLM, as_prepared, heldout_losses
from lorakit.training.arguments import check_best_metric


class LanguageModelling(Task):
    name = "lm"
    script = "run_llm.py"
    peft_task_type = "CAUSAL_LM"
    argument_types = (LmModelArguments, LmLoraArguments, LmDataArguments, LmTrainArguments)
    sweep_metric, sweep_higher_is_better = "perplexity", False

    def read(self, args: RunArguments) -> Prepared:
        data = load_lm_data(args.data)
        model_path = resolve_model_path(args.model.model_name_or_path)
        config = load_config(model_path, args.model)
        length = "block_size" if args.data.is_lm else "max_seq_length"
        check_context(config, {length: getattr(args.data, length)})
        check_lora_shapes(config, args.lora, AutoModelForCausalLM)
        tokenizer = load_tokenizer(model_path, args.model)
        encoded = encode_task(data, tokenizer, args.data)
        check_best_metric(args.training, ["loss", "perplexity"])
        if args.training.eval_strategy != "no" and encoded.heldout is None:
            raise ConfigError(
                f"eval_strategy: task {args.data.task_name} has no held-out text to evaluate during training"
            )
        return Prepared(args, model_path, tokenizer, data, {"encoded": encoded})

    def load_model(self, prepared: Prepared):
        args = prepared.args
        return load_causal_lm(prepared.model_path, args.model, args.training.gradient_checkpointing)

    def train_dataset(self, prepared: Prepared):
        return prepared.extra["encoded"].train

    def eval_datasets(self, prepared: Prepared) -> dict:
        heldout = prepared.extra["encoded"].heldout
        return {} if heldout is None else {"heldout": heldout}

    def collator(self, prepared: Prepared):
        return prepared.extra["encoded"].collate

    def callbacks(self, prepared: Prepared) -> list:
        return [PerplexityCallback()]

    def data_record(self, prepared: Prepared) -> dict:
        data, encoded = prepared.data, prepared.extra["encoded"]
        sizes = {"source": data.source, "train": len(encoded.train)}
        return sizes | {"heldout": len(encoded.heldout or []), "gsm8k": len(data.gsm8k), "mmlu": len(data.mmlu)}

    def evaluate(self, model, prepared: Prepared) -> dict:
        """Every metric the task has (perplexity on held-out text, GSM8K accuracy, MMLU accuracy) of `model`."""
        args = prepared.args
        task = (prepared.extra["encoded"], prepared.data, args.data)
        return evaluate_task(model, prepared.tokenizer, *task, args.training.per_device_eval_batch_size)

    def evaluate_before(self, model, prepared: Prepared) -> dict:
        return self.evaluate(model, prepared)

    def final_metrics(self, trainer, recorder, prepared: Prepared) -> dict:
        return self.evaluate(trainer.model, prepared)

    def summary(self, state: dict, prepared: Prepared) -> str:
        return summary_line(state["before"], state["final"])

    def packed_model(self, packed, k: int, threshold: float, prepared: Prepared):
        return PackedCausalLM(packed, k, threshold)

    def evaluate_pack(self, trainer, prepared: Prepared) -> list[list[dict]]:
        losses = heldout_losses(trainer, prepared.extra["encoded"].heldout)
        return [[{"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 700))}] for loss in losses]

    def final_pack_metrics(self, trainer, model, results, evaluate, prepared: Prepared) -> dict[int, dict]:
        """Each live configuration's final metrics, measured on it alone as its plain PEFT model, under the autocast
        a single run's Trainer gives it."""
        finals = {}
        for index in trainer.model.live:
            with unpacked(model, index) as single, as_prepared(single, trainer.accelerator):
                finals[index] = self.evaluate(single, prepared)
        return finals


def summary_line(before: dict, after: dict) -> str:
    shown = [k for k in ("perplexity", "gsm8k_accuracy", "mmlu_accuracy") if k in after]
    return ", ".join(f"{k} {before[k]:.4g} -> {after[k]:.4g}" for k in shown)
