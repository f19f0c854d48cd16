"""The sweep's processes: parallel workers, signals, and stopping jobs a stopped sweep
leaves behind."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import optuna
from omegaconf import DictConfig

from rnnlab import sweeps, threads

from . import _outcome as outcome
from ._errors import SweepConfigError, SweepInterrupted


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM in the sweep raises SweepInterrupted, so running trials are recorded."""

    def handler(signum: int, frame: Any) -> None:
        raise SweepInterrupted(signal.Signals(signum).name)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def wait_finished(trials: list[optuna.trial.FrozenTrial], seconds: float) -> None:
    """Wait until each trial's run folder says it ended or its job is gone."""
    deadline = time.monotonic() + seconds
    for t in trials:
        while time.monotonic() < deadline and sweeps.process_alive(t.user_attrs.get("job")):
            if outcome.finished_summary(t.user_attrs.get("run_dir")) is not None:
                break
            time.sleep(0.2)


def stop_job(identity: dict[str, Any] | None) -> None:
    """SIGTERM a trial's job process on this host (a joblib worker), if it is still alive:
    a stopped sweep takes its running trials down with it."""
    if identity and sweeps.process_alive(identity):
        with contextlib.suppress(OSError):
            os.kill(int(identity["pid"]), signal.SIGTERM)


def parallelism(config: DictConfig) -> int:
    """Jobs the configured launcher runs at once (rnnlab.threads holds the one definition)."""
    try:
        return threads.launcher_parallelism(config.hydra.launcher)
    except ValueError as e:
        raise SweepConfigError(str(e)) from None
