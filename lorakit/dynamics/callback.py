"""`--lora_diagnostics_steps N`: the paper's dynamics measured during training, at step 1 and every N-th step.

On a diagnostic step the callback keeps each LoRA layer's inputs of that step's forward passes (`InputCapture`) and
its factors before the optimizer step; after it, it computes `lorakit.dynamics.measures.layer_measures` for every
layer of every adapter against the factors of the run's start (taken when the callback is built, before any
checkpoint loads, so a resumed run measures from its true initialization). Each adapter's rows go to its run folder:
`diagnostics.jsonl` (one row per step × layer) and `diagnostics_summary.jsonl` (one row per step, the mean over
layers), appended and handed to the OS at once; the summary's RMS values also go to the Trainer's log
(`diag/<quantity>`, in a pack `diag/<k>/<quantity>`), so `report_to` loggers plot them. A pack member that diverged
(frozen) is no longer measured. A resumed run first drops rows after the step it resumes from, with or without
diagnostics (`KeepRowsUpToStart`), so a folder never holds rows of steps its run has not (re)taken.

Measuring changes nothing the run computes: no random number is drawn, the hooks only copy detached inputs, the
factors are copied under no_grad, and no gradient is read or written.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from lorakit.core.atomic import replace_atomically
from lorakit.dynamics.layers import InputCapture, lora_layers
from lorakit.dynamics.measures import layer_measures, summary

ROWS, SUMMARY = "diagnostics.jsonl", "diagnostics_summary.jsonl"


@dataclass
class Member:
    """Where one adapter's diagnostics go: its index in a pack (None: a single run), its run folder, and the prefix
    of its summary's keys in the Trainer's log."""

    index: int | None
    folder: Path
    log_prefix: str = "diag/"


def is_diagnostic(step: int, every: int) -> bool:
    return step == 1 or step % every == 0


class KeepRowsUpToStart(TrainerCallback):
    """At the start of training, drops each member's rows after the step training starts from."""

    def __init__(self, members: list[Member]):
        self.members = members

    def on_train_begin(self, args, state, control, **kwargs):
        if args.process_index == 0:
            for member in self.members:
                keep_rows_up_to(Path(member.folder), state.global_step)
        return control


class DynamicsCallback(KeepRowsUpToStart):
    """Diagnostics of `model`'s LoRA layers every `every` steps for each of `members` (see the module docstring).
    `attach(trainer)` lets it hand its summaries to the Trainer's log."""

    def __init__(self, model, every: int, members: list[Member], tokens: int = 512):
        super().__init__(members)
        self.every, self.trainer = every, None
        self.layers = lora_layers(model)
        missing = [m.index for m in members if m.index not in self.layers]
        if missing:
            raise ValueError(f"diagnostics: the model has no LoRA layers for adapter(s) {missing}")
        with torch.no_grad():
            self.initial = {m.index: [view.factors() for view in self.layers[m.index]] for m in members}
        self.capture, self.before = InputCapture(self.layers, tokens), None

    def attach(self, trainer) -> "DynamicsCallback":
        self.trainer = trainer
        return self

    def on_step_begin(self, args, state, control, **kwargs):
        if is_diagnostic(state.global_step + 1, self.every):
            with torch.no_grad():
                self.before = {m.index: [view.factors() for view in self.layers[m.index]] for m in self.members}
            self.capture.open()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        if self.before is None:
            return control
        inputs, before, self.before = self.capture.close(), self.before, None
        logs, live = {}, getattr(kwargs.get("model"), "live", None)  # a pack's members that have not diverged
        for member in self.members:
            if live is not None and member.index not in live:
                continue
            rows = self.member_rows(member, inputs, before[member.index], state.global_step)
            means = summary(rows)
            if args.process_index == 0 and rows:
                append_jsonl(Path(member.folder) / ROWS, rows)
                mean = {"step": state.global_step, "layers": len(rows), **means}
                append_jsonl(Path(member.folder) / SUMMARY, [mean])
            logs |= {f"{member.log_prefix}{k}": v for k, v in means.items() if k.startswith("rms_")}
        if self.trainer is not None and logs:
            due = control.should_log  # the Trainer's own log of this step (its loss) must still happen
            self.trainer.log(logs)
            control.should_log = self.trainer.control.should_log = due
        return control

    def member_rows(self, member: Member, inputs: dict, before: list, step: int) -> list[dict]:
        rows = []
        for view, initial, prior in zip(self.layers[member.index], self.initial[member.index], before, strict=True):
            x = inputs.get((view.index, view.name))
            if x is None:  # a layer the step's forward did not reach
                continue
            after = view.factors()
            a, b = after
            row = {"step": step, "layer": view.name, "target": view.target, "module_type": view.module_type}
            row |= {"rank": a.shape[0], "fan_in": a.shape[1], "fan_out": b.shape[0], "scaling": view.scaling}
            row |= {"tokens": x.shape[0], **layer_measures(x, view.scaling, initial, prior, after)}
            rows.append(row)
        return rows


def append_jsonl(path: Path, rows: list[dict]) -> None:
    """Rows appended as JSON lines and flushed to the OS before returning (a killed run keeps every step it
    measured)."""
    with open(path, "a") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))
        handle.flush()


def keep_rows_up_to(folder: Path, step: int) -> None:
    """Drop the rows after `step` (a resumed run measures those steps again); a fresh run (step 0) starts empty."""
    for name in (ROWS, SUMMARY):
        path = folder / name
        if not path.exists():
            continue
        kept = [line for line in path.read_text().splitlines() if line.strip() and row_step(line) <= step]
        replace_atomically(path, lambda partial, kept=kept: partial.write_text("".join(line + "\n" for line in kept)))


def row_step(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):  # a line cut by a kill: dropped
        return float("inf")


def read_rows(folder: Path, name: str = SUMMARY) -> list[dict]:
    """A run folder's diagnostics rows (or summary rows), skipping a line cut by a kill."""
    path = Path(folder) / name
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def add_diagnostics(trainer, training, members: list[Member]) -> DynamicsCallback | None:
    """The diagnostics callback on `trainer` (its model as it is now: the run's initialization) when the training
    arguments ask for it (`lora_diagnostics_steps`), else None."""
    every = getattr(training, "lora_diagnostics_steps", None)
    if not every:
        if any((Path(m.folder) / name).exists() for m in members for name in (ROWS, SUMMARY)):
            trainer.add_callback(KeepRowsUpToStart(members))  # drops an earlier attempt's rows past the resumed step
        return None
    tokens = getattr(training, "lora_diagnostics_tokens", 512)
    callback = DynamicsCallback(trainer.model, every, members, tokens).attach(trainer)
    trainer.add_callback(callback)
    return callback
