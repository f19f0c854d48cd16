"""Errors the user can fix, and the one place their `rnnlab: error: ...` line is formatted.

Their messages are one line naming the key or file at fault. They derive from Hydra's
CompactHydraException so that, when one ends a multirun job, Hydra reports the message alone
rather than a traceback.
"""

from __future__ import annotations

import sys

from hydra.errors import CompactHydraException

PREFIX = "rnnlab: error: "


def error_line(message: str) -> str:
    """`rnnlab: error: <message>`, on one line (a message never spreads over several)."""
    return PREFIX + " ".join(str(message).split())


def fail(message: str, code: int = 2) -> None:
    """Print the error line to stderr and exit with `code` (2: bad input, 1: the run failed)."""
    print(error_line(message), file=sys.stderr)
    sys.exit(code)


class UserError(CompactHydraException):
    """Something the user can fix; `exit_code` is what a single run exits with."""

    exit_code = 2


class ConfigError(UserError):
    """A config value that cannot work."""


class DataError(UserError):
    """A data file that is missing, corrupt or of the wrong format."""


class RunError(UserError):
    """The machine could not run it: out of memory, a full disk, a folder it cannot write."""

    exit_code = 1
