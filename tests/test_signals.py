"""rnnlab.signals: which signals a training run takes over, and what it leaves alone."""

from __future__ import annotations

import signal

import pytest

from rnnlab.signals import Interrupted, signals_as_exceptions


@pytest.fixture
def sigint_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture
def sigint_as_at_a_terminal():
    # The test runner may itself have been started with SIGINT ignored (a background job).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_sigterm_and_sigint_raise_while_training_and_are_restored_after(sigint_as_at_a_terminal):
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Interrupted, match="SIGINT"), signals_as_exceptions():
        signal.raise_signal(signal.SIGINT)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_a_sigint_ignored_from_the_start_stays_ignored(sigint_ignored):
    with signals_as_exceptions():
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)  # nothing happens
        with pytest.raises(Interrupted, match="SIGTERM"):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
