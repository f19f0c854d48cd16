"""Errors the user can fix. Their messages are one line naming the key or file at fault."""


class ConfigError(Exception):
    """A config value that cannot work."""


class DataError(Exception):
    """A data file that is missing, corrupt or of the wrong format."""
