"""Experiment loggers beside metrics.csv: TensorBoard and MLflow (the `logger` config group).

metrics.csv is part of the run folder and the training loop always writes it; `logger=csv`
(the default) adds nothing to it and imports nothing. `logger=tensorboard`, `logger=mlflow`
or `logger=[tensorboard,mlflow]` add the others. The loop talks to all of them through one
`Loggers` object:

    loggers = open_loggers(cfg, run_dir)   # after validation, before the data: bad set-up
                                           # (package missing, URI unusable) is a ConfigError
    loggers.log_epoch(row)                 # each metrics.csv row
    loggers.finish(summary, run_dir)       # at the end, whatever the status; never raises

A logger that fails after it opened logs one warning and is dropped: it never stops training.
Each logger lives in its own module (tensorboard_logger, mlflow_logger) and imports its
library only when it is opened.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig

from rnnlab.errors import ConfigError
from rnnlab.loggers.common import first_line
from rnnlab.loggers.mlflow_logger import MLflowLogger
from rnnlab.loggers.tensorboard_logger import TensorBoardLogger

log = logging.getLogger(__name__)


class Logger(Protocol):
    name: str

    def log_epoch(self, row: dict[str, Any]) -> None: ...
    def finish(self, summary: dict[str, Any], run_dir: Path) -> None: ...
    def close(self) -> None: ...


class Loggers:
    """The configured loggers as one; a logger that raises is warned about once and dropped."""

    def __init__(self, loggers: list[Logger]) -> None:
        self._loggers = list(loggers)

    @property
    def names(self) -> list[str]:
        return [lg.name for lg in self._loggers]

    def log_epoch(self, row: dict[str, Any]) -> None:
        for lg in list(self._loggers):
            self._guard(lg, "log_epoch", lambda lg=lg: lg.log_epoch(row))

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None:
        for lg in list(self._loggers):
            self._guard(lg, "finish", lambda lg=lg: lg.finish(summary, run_dir))
        self.close()

    def close(self) -> None:
        for lg in self._loggers:
            try:
                lg.close()
            except Exception as e:
                log.warning("logger.%s: could not close: %s", lg.name, first_line(e))
        self._loggers = []

    def __enter__(self) -> Loggers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, lg: Logger, what: str, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as e:
            log.warning(
                "logger.%s failed in %s (%s: %s); training goes on without it",
                lg.name,
                what,
                type(e).__name__,
                first_line(e),
            )
            self._loggers.remove(lg)
            with contextlib.suppress(Exception):  # already warned about this logger
                lg.close()


_OPENERS: dict[str, Callable[[DictConfig, DictConfig, Path], Logger]] = {
    "tensorboard": TensorBoardLogger,
    "mlflow": MLflowLogger,
}


def open_loggers(cfg: DictConfig, run_dir: Path) -> Loggers:
    """Open every logger under `cfg.logger`; ConfigError (one line, naming the key) if one
    cannot work. csv alone (or no logger section) opens nothing and imports nothing."""
    section = cfg.get("logger") or {}
    opened: list[Logger] = []
    try:
        for name in section:
            if name == "csv":  # metrics.csv: the training loop writes it regardless
                continue
            opener = _OPENERS.get(name)
            if opener is None:
                raise ConfigError(
                    f"logger.{name}: no such logger; choose from csv, {', '.join(_OPENERS)}"
                )
            opened.append(opener(section[name], cfg, run_dir))
    except BaseException:
        Loggers(opened).close()
        raise
    if opened:
        log.info("loggers: metrics.csv, %s", ", ".join(lg.name for lg in opened))
    return Loggers(opened)
