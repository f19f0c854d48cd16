"""SIGTERM and SIGINT during a run: the run records itself as interrupted, then exits.

The first signal while training raises Interrupted in the main thread; a second one, or one
that arrives while the final files (summary.json, curves.png) are written, is only
remembered, so those files are always complete and the exit code is the signal's.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupted(BaseException):
    """SIGTERM or SIGINT, as an exception so that the run can record itself before it exits."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalGuard:
    """SIGTERM and SIGINT raise Interrupted, once; after that, or once `hold()` is called
    (the final files are being written), a signal is only remembered in `pending`."""

    def __init__(self) -> None:
        self.armed = True
        self.pending: int | None = None

    def handle(self, signum: int, frame: Any) -> None:
        if self.armed:
            self.armed = False
            raise Interrupted(signum)
        self.pending = self.pending or signum

    def hold(self) -> None:
        self.armed = False


@contextmanager
def signals_as_exceptions() -> Iterator[SignalGuard]:
    """While training, SIGTERM/SIGINT end the run as `interrupted` after it has recorded
    itself; a second signal, or one while the final files are written, cannot cut that short."""
    guard = SignalGuard()
    previous = {}
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            # A SIGINT ignored from the start (a script's background job, nohup) stays
            # ignored, as Python itself leaves it: Ctrl-C there is meant for something else.
            if signum == signal.SIGINT and signal.getsignal(signum) == signal.SIG_IGN:
                continue
            previous[signum] = signal.signal(signum, guard.handle)
    except ValueError:  # not the main thread (some launchers): leave signals alone
        pass
    try:
        yield guard
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
