"""What a workload contributes to every run mode (a single run, a pack, the memory probe, a sweep's points): `Task`.

A task parses its own argument sets, reads and checks its data and model before any model loads (`prepare`), loads
its base model, hands the Trainer its datasets, collator, metrics and callbacks, evaluates a model its own way, and,
for packs, runs K adapters on one base (`packed_model`) and evaluates them (`evaluate_pack`). The drivers
(`lorakit.runs.single` for one run, `lorakit.runs.pack` for packs) do everything else, the same way for every task: the
run folder, LoRA and the init scheme, the records, the Trainer, resuming.
"""

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from lorakit.core.parsing import parse_args
from lorakit.models.loading import check_sharded_quantization, quantization_config
from lorakit.training.arguments import check_combination, check_packages


@dataclass
class RunArguments:
    """A run's four named argument sets, as its command line parses into them."""

    model: Any
    lora: Any
    data: Any
    training: Any

    def sections(self) -> dict[str, Any]:
        return {"model": self.model, "lora": self.lora, "data": self.data, "training": self.training}


@dataclass
class Prepared:
    """What a task read and checked before any model loads: its arguments, the model's path (an embedded one
    fetched), its tokenizer and its data (of the task's own kind)."""

    args: RunArguments
    model_path: str
    tokenizer: Any
    data: Any
    extra: dict = field(default_factory=dict)  # anything else a task keeps for itself


class Task:
    """A workload. Subclasses set the class attributes and implement the methods that raise NotImplementedError;
    the others have defaults that suit a task the Trainer evaluates (`final_metrics`, `evaluate_pack`)."""

    name: str = ""  # its name in the registry (`lorakit.tasks.TASKS`) and in sweep files
    script: str | None = None  # its command-line script in the project (run_glue.py), if it has one
    peft_task_type: str  # PEFT's task type for its LoRA model (SEQ_CLS, CAUSAL_LM, …): every task states its own
    argument_types: tuple = ()  # the dataclasses of its model, LoRA, data and training arguments
    sweep_metric: str = "eval_loss"  # a sweep's default metric (a final metric) and its direction
    sweep_higher_is_better: bool = False

    # before any model loads
    def parse(self, argv: list[str]) -> RunArguments:
        """The arguments, each set checked on its own and against the others, and the default output_dir filled in:
        all that can be known without this machine or a file (a sweep checks its points with it, wherever they run)."""
        model, lora, data, training = parse_args(self.argument_types, argv)
        args = RunArguments(model=model, lora=lora, data=data, training=training)
        check_combination(args.lora, args.training)
        check_sharded_quantization(args.model, args.training.fsdp)
        args.training.fill_default_output_dir(args.model.model_name_or_path, self.run_name(args))
        return args

    def parse_to_run(self, argv: list[str]) -> RunArguments:
        """`parse`, then what the arguments need of this machine (`check_machine`): every configuration a run or a
        pack trains goes through it."""
        args = self.parse(argv)
        self.check_machine(args)
        return args

    def check_machine(self, args: RunArguments) -> None:
        """The packages the arguments need here; by default those of the project's model and training arguments
        (a quantized base needs bitsandbytes, an optimizer or a logger its package)."""
        if self.is_quantized(args):
            quantization_config(args.model)
        check_packages(args.training)

    def prepare(self, argv: list[str]) -> Prepared:
        """`parse_to_run`, then `read`: all that can fail before a model loads."""
        return self.read(self.parse_to_run(argv))

    def read(self, args: RunArguments) -> Prepared:
        """Read the data and check it, the model's config and tokenizer against the checked arguments."""
        raise NotImplementedError

    def declares(self, name: str) -> bool:
        """Whether one of the task's argument dataclasses has a field `name`."""
        return any(f.name == name for kind in self.argument_types for f in fields(kind))

    def is_quantized(self, args: RunArguments) -> bool:
        """Whether the base model loads quantized (and so is placed on its device as it loads)."""
        return any(getattr(args.model, flag, False) for flag in ("load_in_4bit", "load_in_8bit"))

    def run_name(self, args: RunArguments) -> str:
        """The folder under outputs/ a run's default output_dir goes in."""
        return getattr(args.data, "task_name", self.name)

    # the model and what the Trainer trains it on
    def load_model(self, prepared: Prepared) -> torch.nn.Module:
        """The base model, before LoRA."""
        raise NotImplementedError

    def train_dataset(self, prepared: Prepared):
        raise NotImplementedError

    def eval_datasets(self, prepared: Prepared) -> dict:
        """The held-out sets the Trainer evaluates during training, by name (none: {})."""
        return {}

    def collator(self, prepared: Prepared):
        raise NotImplementedError

    def compute_metrics(self, prepared: Prepared):
        """The Trainer's `compute_metrics`, or None."""
        return None

    def callbacks(self, prepared: Prepared) -> list:
        return []

    # records and evaluation
    def best_metric(self, prepared: Prepared) -> tuple[str, bool]:
        """The evaluation metric (without eval_) that picks a run's best evaluation, and whether higher is better."""
        return "loss", False

    def data_record(self, prepared: Prepared) -> dict:
        """The data's sizes and source, for run_config.json."""
        return {}

    def evaluate_before(self, model, prepared: Prepared) -> dict | None:
        """Metrics of the model before training (with BA = 0, the base model's), or None when the task takes none."""
        return None

    def final_metrics(self, trainer, recorder, prepared: Prepared) -> dict:
        """The run's final metrics: its last evaluation if the Trainer took it at the last step, else a fresh one."""
        evaluations = recorder.state["evaluations"]
        if evaluations and evaluations[-1]["step"] == trainer.state.global_step:
            return evaluations[-1]
        return trainer.evaluate()

    def summary(self, state: dict, prepared: Prepared) -> str:
        """The run's outcome in a few words, from its metrics.json state (its `before` and `final`)."""
        return ", ".join(f"{k}={v:.4f}" for k, v in (state.get("final") or {}).items() if k.startswith("eval_"))

    # packs
    def packed_model(self, packed, k: int, threshold: float, prepared: Prepared):
        """The `lorakit.packing.model.PackedModel` that runs K adapters on one batch and computes their K losses."""
        raise NotImplementedError

    def evaluate_pack(self, trainer, prepared: Prepared) -> list[list[dict]]:
        """Every adapter's evaluation rows (one per held-out set, named as a single run's Trainer names them)."""
        raise NotImplementedError

    def final_pack_metrics(self, trainer, model, results, evaluate, prepared: Prepared) -> dict[int, dict]:
        """Each live adapter's final metrics: as `final_metrics` does it, through the pack's `trainer.evaluate()`
        (which scores them all with `evaluate(step, epoch)` and logs them, each member's into its own TensorBoard
        run)."""
        last, live = trainer.state.global_step, trainer.model.live
        if not all(evaluated_at(results.recorders[index], last) for index in live):
            trainer.evaluate()
        return {index: results.recorders[index].state["evaluations"][-1] for index in live}


def evaluated_at(recorder, step: int) -> bool:
    evaluations = recorder.state["evaluations"]
    return bool(evaluations) and evaluations[-1]["step"] == step
