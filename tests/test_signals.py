"""rnnlab.signals: which signals a training run takes over, and what it leaves alone."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from rnnlab.signals import Interrupted, signals_as_exceptions


@contextmanager
def sigint_at_start(handler: Any) -> Iterator[None]:
    """SIGINT as a run may find it when it starts, set here whatever the test runner itself
    inherited (a background job starts with it ignored)."""
    before = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def test_sigterm_and_sigint_raise_while_training_and_are_restored_after():
    with sigint_at_start(signal.default_int_handler):
        before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        with pytest.raises(Interrupted, match="SIGINT"), signals_as_exceptions():
            signal.raise_signal(signal.SIGINT)
        assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_sigint_ignored_from_the_start_stays_ignored():
    with sigint_at_start(signal.SIG_IGN):
        with signals_as_exceptions():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            signal.raise_signal(signal.SIGINT)  # nothing happens
            with pytest.raises(Interrupted, match="SIGTERM"):
                signal.raise_signal(signal.SIGTERM)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
