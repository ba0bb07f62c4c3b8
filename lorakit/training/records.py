"""What a run leaves behind: its resolved config and a metrics file kept current, so nothing is lost if it dies.

``run_config.json`` — every setting, the init record, the LoRA+ groups, library versions, the command line (secrets
redacted); written by the run's first attempt and kept by the attempts that resume it.
``metrics.json`` — ``status`` (running, done, diverged, failed, interrupted), every evaluation (one per step, across
attempts), the final and best ones, ``attempts`` (each attempt's start, the step it resumed from, its command, its
number of processes, wall time and how it ended) and ``wall_time_s`` (their sum); rewritten atomically after each
evaluation.
``pandas.DataFrame(json.load(f)["evaluations"])`` gives the learning curve.
"""

import contextlib
import dataclasses
import logging
import math
import platform
import signal
import subprocess
import sys
import time
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
from transformers import TrainerCallback

from lorakit.core.atomic import write_json_atomic
from lorakit.core.run_folder import checkpoint_step, read_json_file
from lorakit.core.secrets import redact_argv, redact_settings
from lorakit.training.card import write_model_card

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
        "command": redact_argv(sys.argv),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


class RunRecorder:
    """Keeps ``metrics.json`` current. ``primary_metric`` (without the eval_ prefix) decides the best evaluation:
    the highest, or the lowest when not `higher_is_better`. Only an `enabled` recorder (the main process) writes.

    An earlier record in the folder keeps its attempts (one still marked running was killed: interrupted). With
    `resume`, its evaluations up to `resume_step` (all, if None) are kept too; those after it are dropped, since the
    resumed run takes them again."""

    def __init__(
        self,
        output_dir: str,
        primary_metric: str,
        enabled: bool = True,
        resume: bool = False,
        higher_is_better: bool = True,
        resume_step: int | None = None,
        world_size: int = 1,
    ):
        self.dir = Path(output_dir)
        self.enabled = enabled
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.primary_metric = primary_metric
        self.sign = 1 if higher_is_better else -1
        self.state = {"status": "running", "evaluations": [], "final": None, "best": None, "diverged_at_step": None}
        earlier = read_json_file(self.dir / "metrics.json") if enabled else None
        earlier = earlier if isinstance(earlier, dict) else {}
        attempts = [a for a in earlier.get("attempts") or [] if isinstance(a, dict)]
        for attempt in attempts:
            if attempt.get("status") == "running":
                attempt["status"] = "interrupted"
        if resume:
            for row in earlier.get("evaluations") or []:
                step = row.get("step") if isinstance(row, dict) else None
                if isinstance(step, int) and (resume_step is None or step <= resume_step):
                    self._keep(row)
        self.attempt = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resumed_from_step": resume_step if resume else None,
            "command": redact_argv(sys.argv), "world_size": world_size, "wall_time_s": 0.0, "status": "running",
        }  # fmt: skip
        self.state["attempts"] = [*attempts, self.attempt]
        self._started = time.time()
        self._write()

    @classmethod
    def for_training(cls, train_args, primary_metric: str, higher_is_better: bool = True) -> "RunRecorder":
        """The recorder of a Trainer run: in its output_dir, written by the main process; a run resumed from a
        checkpoint keeps the evaluations up to the checkpoint's step."""
        checkpoint = train_args.resume_from_checkpoint
        return cls(
            train_args.output_dir,
            primary_metric,
            enabled=train_args.process_index == 0,
            resume=checkpoint is not None,
            higher_is_better=higher_is_better,
            resume_step=checkpoint_step(Path(checkpoint)) if checkpoint is not None else None,
            world_size=train_args.world_size,
        )

    def write_config(self, config: dict) -> None:
        """Write run_config.json (secrets redacted), unless this attempt resumes from a checkpoint of a run whose first
        attempt wrote it; an attempt that starts again at step 0 writes its own."""
        path = self.dir / "run_config.json"
        if self.enabled and not (self.attempt["resumed_from_step"] is not None and path.is_file()):
            write_json_atomic(path, redact_settings(config))

    def touch(self) -> None:
        """Rewrite metrics.json with the attempt's wall time so far (a SIGKILL leaves it this fresh)."""
        self._write()

    def _keep(self, row: dict) -> None:
        self.state["evaluations"].append(row)
        key = next((k for k in row if k.startswith("eval") and k.endswith(self.primary_metric)), None)
        best = self.state["best"]
        value = row.get(key) if key is not None else None
        if isinstance(value, int | float) and (
            best is None or self.sign * value > self.sign * best.get(key, -self.sign * math.inf)
        ):
            self.state["best"] = row

    def add_evaluation(self, metrics: dict, step: int, epoch: float | None) -> None:
        self._keep({"step": step, "epoch": epoch, **metrics})
        self._write()

    def record(self, key: str, value) -> None:
        """Keep `value` under `key` in metrics.json (e.g. the evaluation before training)."""
        self.state[key] = value
        self._write()

    def finish(self, status: str, final: dict | None = None, **details) -> None:
        """Record the outcome; a run done (its adapter saved) gets its model card, README.md."""
        self.attempt["status"] = status
        self.state.update(status=status, final=final, **details)
        self._write()
        if status == "done" and self.enabled:
            write_model_card(self.dir)  # a card it cannot write is a warning, never a failed run

    def _write(self) -> None:
        self.attempt["wall_time_s"] = round(time.time() - self._started, 1)
        self.state["wall_time_s"] = round(sum(a.get("wall_time_s") or 0 for a in self.state["attempts"]), 1)
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
        self.recorder.touch()
        loss = (logs or {}).get("loss")
        if loss is not None and not (math.isfinite(loss) and loss <= self.loss_threshold):
            self._diverge(state.global_step, f"training loss {loss} (threshold {self.loss_threshold})", control)
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if metrics:
            self.recorder.add_evaluation(metrics, state.global_step, state.epoch)
        return control


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) while a run trains: recorded as interrupted, so a rerun resumes it."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def outcome_recorded(recorder: RunRecorder):
    """Whatever stops the run inside this block is recorded before it is raised on: ``interrupted`` (Ctrl-C, a
    SIGTERM from a scheduler or a sweep) or ``failed`` with the error and its traceback. Only a process killed
    outright (SIGKILL) leaves ``running`` behind; the next attempt and the sweep tool read that as interrupted."""
    try:
        yield
    except KeyboardInterrupt as err:
        recorder.finish("interrupted", error=f"{type(err).__name__}: {err}")
        raise
    except BaseException as err:
        recorder.finish("failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        err.recorded_in = str(recorder.dir / "metrics.json")  # for the one line the runner prints
        raise


def train_and_finish(trainer, recorder: RunRecorder, monitor: RunMonitor, final_metrics) -> dict | None:
    """Train (resuming from the arguments' checkpoint, if any), then record the outcome: ``diverged`` (returns None)
    or ``done`` with `final_metrics()` and the adapter saved."""
    args = trainer.args
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    if monitor.diverged_at_step is not None:
        recorder.finish("diverged", diverged_at_step=monitor.diverged_at_step, reason=monitor.reason)
        logger.warning("diverged at step %d: %s", monitor.diverged_at_step, monitor.reason)
        return None
    final = final_metrics()
    trainer.final_metrics = final  # for the model card a push of save_model uploads (`LoraTrainer.create_model_card`)
    trainer.save_model(args.output_dir)
    recorder.finish("done", final=final)
    return final
