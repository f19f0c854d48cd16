"""The vocabulary of `rnnlab compare`: its columns, key aliases and value helpers.

Shared by every module of the package; imports nothing from it.
"""

from __future__ import annotations

import math
from typing import Any


class CompareError(Exception):
    """A mistake in the command line; reported as one `rnnlab: error:` line."""


# Keys that differ between runs for reasons unrelated to the result (where a run was
# written, how it was resumed, which Optuna trial it was); never a "differing" column.
IGNORED_PREFIXES = ("paths.", "hydra.", "trial.")
IGNORED_KEYS = frozenset({"resume", "trial"})
IGNORED_GROUPS = frozenset({"hydra", "paths"})
SEED_KEY = "seed"

# The outcome columns, in table order: key in the row -> header.
OUTCOME_COLUMNS = {
    "status": "status",
    "objective": "objective",
    "best_val_acc": "best val acc",
    "test_acc": "test acc",
    "epochs_completed": "epochs",
    "wall_time_s": "wall time",
    "train_samples_per_s": "samples/s",
}
# Summary fields averaged over seeds in --group-by-seed.
AGGREGATED = (
    "objective",
    "best_val_acc",
    "test_acc",
    "epochs_completed",
    "wall_time_s",
    "train_samples_per_s",
)
# Summary fields that hold a number (or null); anything else there is shown as "n/a".
NUMERIC_FIELDS = frozenset(
    {*AGGREGATED, "best_epoch", "epochs_planned", "num_params", "test_loss", "best_val_loss"}
)
# Sorting on these puts the largest first (--reverse flips); every other key sorts ascending.
HIGHER_IS_BETTER = frozenset({"best_val_acc", "test_acc", "train_samples_per_s", "num_params"})
# Friendlier names accepted by --sort / --where / --columns.
ALIASES = {
    "epochs": "epochs_completed",
    "wall_time": "wall_time_s",
    "samples/s": "train_samples_per_s",
    "samples_per_s": "train_samples_per_s",
    "val_acc": "best_val_acc",
    "dir": "run_dir",
}
NOT_AVAILABLE = "n/a"


def as_number(value: Any) -> float | None:
    """`value` as a float when it is a number or a numeric string; None otherwise.

    Ints too large for a float (JSON allows any length) count as not a number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)
    except (ValueError, OverflowError):
        return None


def finite_number(value: Any) -> float | None:
    """Like as_number, but NaN and +-Infinity are None too."""
    number = as_number(value)
    return number if number is not None and math.isfinite(number) else None


def is_number(value: Any) -> bool:
    """A JSON number (not a bool, not a string)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def compact_target(value: str) -> str:
    """torch.optim.Adam -> Adam: a class path shown by its last component."""
    return value.rsplit(".", 1)[-1]
