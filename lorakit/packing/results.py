"""A pack's results: every configuration gets, in its own output directory, what its single run would leave there
(`run_config.json`, `metrics.json` kept current, and when done its PEFT adapter). `metrics.json` also names the pack
(`packed`: index and size); `run_config.json` lists the pack's members. Why a configuration diverged is kept in the
pack's folder (`diverged.json`) so that a resumed pack reports it as the first run did."""

import json
import logging
from pathlib import Path

from lorakit.core.atomic import write_json_atomic
from lorakit.packing.layers import unpacked
from lorakit.training.records import RunRecorder

logger = logging.getLogger(__name__)


class PackResults:
    """The K configurations' recorders, and the divergences so far (index → (step, reason))."""

    def __init__(self, arguments: list, configs: list[dict], pack_dir: str, metric: str, higher_is_better: bool):
        self.members = [args.training.output_dir for args in arguments]
        k, resumed = len(arguments), arguments[0].training.resume_from_checkpoint
        self.recorders = []
        for index, (args, config) in enumerate(zip(arguments, configs, strict=True)):
            recorder = RunRecorder.for_training(args.training, metric, higher_is_better)
            recorder.write_config({**config, "packed": {"index": index, "size": k, "members": self.members}})
            recorder.record("packed", {"index": index, "size": k})
            if resumed:
                recorder.record("resumed_from", str(resumed))
            self.recorders.append(recorder)
        self.reasons_file = Path(pack_dir) / "diverged.json"
        kept = read_json(self.reasons_file) if resumed else {}
        self.diverged = {int(i): tuple(v) for i, v in kept.items()}

    def record(self, key: str, value) -> None:
        """The same entry in every configuration's metrics.json (e.g. the evaluation before training)."""
        for recorder in self.recorders:
            recorder.record(key, value)

    def on_divergence(self, index: int, step: int, reason: str) -> None:
        if index in self.diverged:  # re-frozen after a resume: the first reason stands
            return
        self.diverged[index] = (step, reason)
        write_json_atomic(self.reasons_file, {str(i): list(v) for i, v in self.diverged.items()})
        logger.warning("configuration %d (%s) diverged at step %d: %s", index, self.members[index], step, reason)

    def add_evaluations(self, rows: dict[int, list[dict]], step: int, epoch: float | None) -> dict:
        """Record each configuration's evaluation rows (one per evaluation set); all of them, keyed by index."""
        merged = {}
        for index, index_rows in rows.items():
            for row in index_rows:
                self.recorders[index].add_evaluation(row, step, epoch)
                merged |= {f"eval_{index}_{key.removeprefix('eval_')}": value for key, value in row.items()}
        return merged

    def finish(self, model, tokenizer, finals: dict[int, dict], summary=None) -> None:
        """Done (with `finals[index]` and the adapter saved) or diverged, for each configuration; a line each on
        stdout (with `summary(metrics)` for a configuration done)."""
        for index, recorder in enumerate(self.recorders):
            if index in self.diverged:
                self.finish_diverged(index)
                continue
            with unpacked(model, index) as single:
                single.save_pretrained(self.members[index])
                tokenizer.save_pretrained(self.members[index])
            recorder.finish("done", final=finals[index])
        for index, member in enumerate(self.members):
            state = self.recorders[index].state
            said = f" ({summary(state)})" if summary and state["status"] == "done" else ""
            print(f"done [{index}]: {state['status']}{said} -> {member}")

    def finish_diverged(self, index: int) -> None:
        step, reason = self.diverged[index]
        self.recorders[index].finish("diverged", diverged_at_step=step, reason=reason)

    def fail(self, err: BaseException) -> None:
        """The pack stopped on `err`: whoever has not ended is interrupted (a signal) or failed, unless it had
        diverged before."""
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        for index, recorder in enumerate(self.recorders):
            if recorder.state["status"] != "running":
                continue
            if index in self.diverged:
                self.finish_diverged(index)
            else:
                recorder.finish(status, error=f"{type(err).__name__}: {err}")


def train_pack(trainer, results: PackResults, final_metrics, model, tokenizer, summary=None) -> None:
    """Train the pack, then record each configuration's outcome: diverged, or done with `final_metrics()[index]`
    and its adapter saved; on an error, failed (re-raised)."""
    try:
        trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
        results.finish(model, tokenizer, final_metrics(), summary)
    except BaseException as err:
        results.fail(err)
        raise


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
