"""Each configuration of a pack as a run of its own in the loggers. A pack is one Trainer, so its logs name every
configuration's values by index (`member_keys`: ``loss/<k>``, ``learning_rate/<k>`` and ``learning_rate/<k>/<group>``,
``eval_<k>_<metric>``, ``diag/<k>/<quantity>``), which any `report_to` logger plots as separate curves;
with ``--report_to tensorboard``, `MemberBoards` also writes each configuration's own values, named as a single run
names them (and its learning rate per optimizer group as ``learning_rate/<group>``, which a single run does not log),
into its own folder (``<member>/runs/<time>_<host>``), so TensorBoard lists it as a run beside the sweep's single
runs. A final evaluation taken after training (when the last step was not an evaluation step) goes into the same runs,
as a single run's does; the causal-LM task's final measurement of each member alone is, like a single run's, only in
its metrics.json."""

import re
from pathlib import Path

from transformers import TrainerCallback
from transformers.integrations.integration_utils import default_logdir, rewrite_logs

MEMBER_KEY = re.compile(r"^(?:(?P<name>loss|learning_rate|diag)/(?P<k>\d+)(?P<rest>/.*)?|eval_(?P<ek>\d+)_(?P<m>.+))$")


def member_keys(losses: list[float], learning_rates: list[dict[str, float]], live: list[int]) -> dict:
    """The training log's values of each live configuration: its mean loss since the last log and its learning rate
    (its first group's, and each group's)."""
    logs = {}
    for k in live:
        logs[f"loss/{k}"] = losses[k]
        groups = learning_rates[k]
        if groups:
            logs[f"learning_rate/{k}"] = next(iter(groups.values()))
            logs |= {f"learning_rate/{k}/{name}": lr for name, lr in groups.items()}
    return logs


def member_logs(logs: dict, k: int) -> dict:
    """Configuration `k`'s values of a pack's log, named as a single run names them (``loss``, ``eval_accuracy``,
    ``diag/rms_z_a``, ``learning_rate/B``)."""
    own = {}
    for key, value in logs.items():
        found = MEMBER_KEY.match(key)
        if found is None:
            continue
        if found["ek"] is not None and int(found["ek"]) == k:
            own[f"eval_{found['m']}"] = value
        elif found["k"] is not None and int(found["k"]) == k:
            own[found["name"] + (found["rest"] or "")] = value
    return own


class MemberBoards(TrainerCallback):
    """With ``--report_to tensorboard``: each configuration's log values into its own TensorBoard run."""

    def __init__(self, member_dirs: list[Path]):
        self.member_dirs, self.writers, self.logdirs, self.ended = member_dirs, {}, {}, False

    def writer(self, k: int):
        """Member `k`'s writer, into the one run folder it got first (also when reopened after training ends)."""
        if k not in self.writers:
            from torch.utils.tensorboard import SummaryWriter  # only when TensorBoard is asked for

            logdir = self.logdirs.setdefault(k, str(self.member_dirs[k] / default_logdir()))
            self.writers[k] = SummaryWriter(log_dir=logdir)
        return self.writers[k]

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or "tensorboard" not in (args.report_to or []):
            return
        for k in range(len(self.member_dirs)):
            own = {key: v for key, v in rewrite_logs(member_logs(logs or {}, k)).items() if isinstance(v, int | float)}
            for key, value in own.items():
                self.writer(k).add_scalar(key, value, state.global_step)
            if own:
                self.writer(k).flush()
            if self.ended and k in self.writers:  # a log after training (the final evaluation): nothing is left open
                self.writers.pop(k).close()

    def on_train_end(self, args, state, control, **kwargs):
        for writer in self.writers.values():
            writer.close()
        self.writers, self.ended = {}, True
