"""Stop a training loop cleanly on SIGTERM or SIGUSR1: checkpoint at the next iteration boundary, then exit.

Slurm sends SIGTERM when a job reaches its time limit (and SIGKILL ``KillWait`` seconds later), and
the Slurm profile asks for SIGUSR1 a set time before the limit (profiles/slurm/README.md,
"Pre-emption"). A training loop runs inside :func:`stop_signals`, polls the request it yields once per
iteration, and when it is set writes its checkpoint and raises :func:`preempted`'s exception.

The exit status is 128 + the signal number (143 for SIGTERM, 138 for SIGUSR1): the shell's code for
a process ended by that signal, which Slurm, Snakemake and shells all read as "stopped, not finished"
rather than as a crash (1) or bad input (2, magflow's error code). Being non-zero, it makes Snakemake
treat the job as failed, so it never takes the job's outputs as complete, and a retry (the profile's
``retries``) or a rerun of the same command resumes from the checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """A loop stopped on a signal after writing its checkpoint.

    A :class:`SystemExit`, so that no ``except Exception`` swallows it, ``finally`` blocks still run,
    and an entry point that does not catch it exits with :attr:`code` (128 + the signal number)
    without a traceback; the message has been logged already.
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(128 + signum)
        self.message, self.signum = message, signum

    def __str__(self) -> str:
        return self.message


@dataclass
class StopRequest:
    """The first stop signal received while :func:`stop_signals` is active (``None`` until then)."""

    signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __bool__(self) -> bool:
        return self.requested


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@contextmanager
def stop_signals(signals: Sequence[int] = SIGNALS) -> Iterator[StopRequest]:
    """Record SIGTERM and SIGUSR1 (by default) instead of dying of them; the old handlers come back on exit.

    Outside the main thread, where Python cannot install handlers, the request is never set. A second
    signal changes nothing: the loop is already on its way to the checkpoint.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def record(signum: int, frame: FrameType | None) -> None:
        if request.signum is None:
            request.signum = signum
            if os.getpid() == owner:  # data-loader workers forked from the loop inherit this handler: quiet there
                log.warning("received %s: stopping at the next iteration boundary, after a checkpoint",
                            signal_name(signum))

    owner = os.getpid()
    previous = {signum: signal.signal(signum, record) for signum in signals}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def preempted(what: str, signum: int, position: str, checkpoint: str | os.PathLike[str]) -> Preempted:
    """Log the line that says where ``what`` (e.g. "pretraining") stopped and how to go on; return the exit."""
    message = (f"{what} stopped by {signal_name(signum)} {position}; checkpoint written to {checkpoint}. "
               "Rerun the same command (e.g. the same snakemake command) to resume from it; exit status "
               f"{128 + signum} (128 + {signal_name(signum)})")
    log.warning("%s", message)
    return Preempted(message, signum)


def ignore_warning_signal() -> None:
    """Ignore SIGUSR1 in this process and, since an ignored signal stays ignored across fork and exec, in
    the processes it starts, unless they install a handler as the training loops do.

    The workflow calls this in every Snakemake process, so that the warning signal that Slurm sends to
    every process of a job step (profiles/slurm/README.md) ends neither Snakemake, nor the shell that
    runs a job's script, nor torchrun, nor a job that cannot checkpoint, and only reaches the loops.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
