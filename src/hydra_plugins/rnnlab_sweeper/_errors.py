"""The sweeper's one-line errors (Hydra prints a CompactHydraException without a traceback)."""

from __future__ import annotations

from hydra.errors import CompactHydraException

from rnnlab import secrets


class SweepConfigError(CompactHydraException):
    """A mistake in the sweep's config or surroundings, found before any trial runs."""

    def __init__(self, message: str) -> None:
        super().__init__(f"rnnlab: error: {secrets.mask_url(message)}")


class SweepFailed(CompactHydraException):
    """The sweep ran but did not end well (stopped, interrupted, no trial succeeded): exit 1
    after everything it did was recorded."""

    def __init__(self, message: str) -> None:
        super().__init__(f"rnnlab: error: {secrets.mask_url(message)}")


class SweepInterrupted(BaseException):
    """SIGTERM in the sweep process, raised like KeyboardInterrupt so running trials are
    recorded before it exits."""
