"""How a runner script ends, whatever happens: one line per error, exit codes a scheduler can read, and signals
turned into a recorded interruption.

Exit codes: 0 done or diverged (or the folder already held the finished run); 2 bad input (a ConfigError, found
before any model loads); 1 any other failure (once a run's record exists, recorded there as failed with its
traceback, and the line names the file); 130 or 143 interrupted by SIGINT or SIGTERM (recorded as interrupted: the
same command resumes it). ``LORA_TOOLKIT_DEBUG=1`` also prints the traceback of a failure.
"""

import os
import signal
import sys
import traceback

from lorakit.core.errors import ConfigError, one_line
from lorakit.models.embedded import FetchError
from lorakit.training.records import Interrupted


def raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


def report(name: str, message: str, code: int, err: BaseException | None = None, started: bool = False) -> int:
    """One line on stderr (on a line of its own after training started: a progress bar may be mid-line)."""
    if err is not None and os.environ.get("LORA_TOOLKIT_DEBUG"):
        traceback.print_exception(err)
    print(f"{chr(10) if started else ''}{name}: error: {one_line(message)}", file=sys.stderr, flush=True)
    return code


def interrupted(name: str, err: KeyboardInterrupt, started: bool) -> int:
    signum = getattr(err, "signum", signal.SIGINT)
    again = "; run the same command again to resume" if started else ""
    print(f"{chr(10) if started else ''}{name}: interrupted by {signal.Signals(signum).name}{again}", file=sys.stderr)
    return 128 + signum


def run_command(name: str, prepare, train) -> int:
    """`prepare()` (parse, read, check: no model) then `train(prepared)`, unless `prepare` returns None (nothing to
    do). Each error becomes one line on stderr and an exit code (this module's docstring)."""
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        prepared = prepare()
    except (ConfigError, FetchError) as err:
        return report(name, str(err), 2)
    except KeyboardInterrupt as err:
        return interrupted(name, err, started=False)
    except Exception as err:  # unforeseen, before any model loaded: still one line
        return report(name, f"{type(err).__name__}: {err}", 1, err)
    if prepared is None:
        return 0
    try:
        return train(prepared)
    except KeyboardInterrupt as err:
        return interrupted(name, err, started=True)
    except (ConfigError, FetchError) as err:
        return report(name, str(err), 2, started=True)
    except Exception as err:
        where = f" (recorded in {err.recorded_in})" if getattr(err, "recorded_in", None) else ""
        return report(name, f"{type(err).__name__}: {one_line(err)}{where}", 1, err, True)
