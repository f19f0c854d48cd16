"""Errors the user can fix. Their messages are one line naming the key or file at fault.

They derive from Hydra's CompactHydraException so that, when one ends a multirun job, Hydra
reports the message alone rather than a traceback.
"""

from hydra.errors import CompactHydraException


class ConfigError(CompactHydraException):
    """A config value that cannot work."""


class DataError(CompactHydraException):
    """A data file that is missing, corrupt or of the wrong format."""
