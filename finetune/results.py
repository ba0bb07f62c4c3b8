"""What a run leaves behind: its resolved config and a metrics file kept current, so nothing is lost if it dies.

``run_config.json`` — every setting, the init record, the LoRA+ groups, library versions, the command line.
``metrics.json`` — ``status`` (running, done, diverged, failed), every evaluation, the final and best ones; rewritten
atomically after each evaluation. ``pandas.DataFrame(json.load(f)["evaluations"])`` gives the learning curve.
"""

import dataclasses
import json
import logging
import math
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from transformers import TrainerCallback

from finetune.atomic import write_json_atomic

logger = logging.getLogger(__name__)
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "tokenizers", "numpy", "scikit-learn", "scipy")


def library_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True)
    return done.stdout.strip() or None


def resolved_config(sections: dict, extra: dict) -> dict:
    """The run's full configuration: each argument dataclass as a dict, plus provenance."""
    config = {
        name: (obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj)) for name, obj in sections.items()
    }
    return {
        **config,
        **extra,
        "command": sys.argv,
        "versions": library_versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class RunRecorder:
    """Keeps ``metrics.json`` current. ``primary_metric`` (without the eval_ prefix) decides the best evaluation:
    the highest, or the lowest when not `greater_is_better`. Only an `enabled` recorder (the main process) writes."""

    def __init__(
        self,
        output_dir: str,
        primary_metric: str,
        enabled: bool = True,
        resume: bool = False,
        greater_is_better: bool = True,
    ):
        self.dir = Path(output_dir)
        self.enabled = enabled
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.primary_metric = primary_metric
        self.sign = 1 if greater_is_better else -1
        self.state = {"status": "running", "evaluations": [], "final": None, "best": None, "diverged_at_step": None}
        earlier = self.dir / "metrics.json"
        if resume and earlier.is_file():  # a resumed run keeps the evaluations made before it stopped
            kept = json.loads(earlier.read_text())
            self.state.update(evaluations=kept.get("evaluations", []), best=kept.get("best"))
        self._started = time.time()
        self._write()

    @classmethod
    def for_training(cls, train_args, primary_metric: str, greater_is_better: bool = True) -> "RunRecorder":
        """The recorder of a Trainer run: in its output_dir, written by the main process, kept on resume."""
        return cls(
            train_args.output_dir,
            primary_metric,
            enabled=train_args.process_index == 0,
            resume=train_args.resume_from_checkpoint is not None,
            greater_is_better=greater_is_better,
        )

    def write_config(self, config: dict) -> None:
        if self.enabled:
            write_json_atomic(self.dir / "run_config.json", config)

    def add_evaluation(self, metrics: dict, step: int, epoch: float | None) -> None:
        row = {"step": step, "epoch": epoch, **metrics}
        self.state["evaluations"].append(row)
        key = next((k for k in row if k.startswith("eval") and k.endswith(self.primary_metric)), None)
        best = self.state["best"]
        if key is not None and (
            best is None or self.sign * row[key] > self.sign * best.get(key, -self.sign * math.inf)
        ):
            self.state["best"] = row
        self._write()

    def record(self, key: str, value) -> None:
        """Keep `value` under `key` in metrics.json (e.g. the evaluation before training)."""
        self.state[key] = value
        self._write()

    def finish(self, status: str, final: dict | None = None, **details) -> None:
        self.state.update(status=status, final=final, wall_time_s=round(time.time() - self._started, 1), **details)
        self._write()

    def _write(self) -> None:
        if self.enabled:
            write_json_atomic(self.dir / "metrics.json", self.state)


class RunMonitor(TrainerCallback):
    """Records evaluations, and stops training as diverged when the logged loss is NaN/inf or above
    `loss_threshold`, or (checked at logging steps) a trainable parameter stops being finite."""

    def __init__(self, recorder: RunRecorder, loss_threshold: float):
        self.recorder = recorder
        self.loss_threshold = loss_threshold
        self.diverged_at_step: int | None = None
        self.reason = ""

    def _diverge(self, step: int, reason: str, control) -> None:
        if self.diverged_at_step is None:
            self.diverged_at_step, self.reason = step, reason
        control.should_training_stop = True
        control.should_evaluate = False
        control.should_save = False

    def on_step_end(self, args, state, control, model=None, **kwargs):
        at_log_step = state.logging_steps and state.global_step % state.logging_steps == 0
        if model is not None and self.diverged_at_step is None and at_log_step:
            finite = [p.detach().isfinite().all() for p in model.parameters() if p.requires_grad]
            if finite and not bool(torch.stack(finite).all()):
                self._diverge(state.global_step, "non-finite trainable parameter", control)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not (math.isfinite(loss) and loss <= self.loss_threshold):
            self._diverge(state.global_step, f"training loss {loss} (threshold {self.loss_threshold})", control)
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics:
            self.recorder.add_evaluation(metrics, state.global_step, state.epoch)
        return control


def train_and_finish(trainer, recorder: RunRecorder, monitor: RunMonitor, final_metrics) -> dict | None:
    """Train, then record the outcome: ``diverged`` (returns None), ``done`` with `final_metrics()` and the adapter
    saved, or ``failed`` with the error (re-raised). Only a process killed outright (SIGKILL, or SIGTERM with no
    handler) leaves ``running`` behind; the sweep tool reads that as interrupted."""
    args = trainer.args
    try:
        trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        if monitor.diverged_at_step is not None:
            recorder.finish("diverged", diverged_at_step=monitor.diverged_at_step, reason=monitor.reason)
            logger.warning("diverged at step %d: %s", monitor.diverged_at_step, monitor.reason)
            return None
        final = final_metrics()
        trainer.save_model(args.output_dir)
    except BaseException as err:
        recorder.finish("failed", error=f"{type(err).__name__}: {err}")
        raise
    recorder.finish("done", final=final)
    return final
