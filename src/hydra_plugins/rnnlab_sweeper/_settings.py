"""Reading the sweeper's settings: directions, the default study name and storage, and the
Hydra config nodes the sweeper rewrites."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from rnnlab import runs
from rnnlab.runs import Direction

from ._errors import SweepConfigError


def directions(raw: Any, metric: Any) -> list[Direction]:
    """hydra.sweeper.direction (one or a list); unset: the one optimized_metric implies,
    else upstream's default, minimize."""
    implied = runs.OPTIMIZED_METRICS.get(str(metric))
    if raw is None:
        return [implied or Direction.MIN]
    items = list(raw) if isinstance(raw, list | tuple | ListConfig) else [raw]
    try:
        found = [Direction.from_optuna(d) for d in items]
    except ValueError:
        raise SweepConfigError(
            f"hydra.sweeper.direction={raw}: expected maximize or minimize, or a list of them"
        ) from None
    if not found:
        raise SweepConfigError("hydra.sweeper.direction=[]: name at least one direction")
    if implied is not None and found[0] != implied:
        raise SweepConfigError(
            f"hydra.sweeper.direction={found[0].optuna} but optimized_metric={metric} must be "
            f"{implied.optuna}d; leave direction unset to follow the metric"
        )
    return found


@contextlib.contextmanager
def writable(config: DictConfig, *keys: str) -> Iterator[None]:
    """`config` and its nodes at `keys` writable and open (Hydra 1.4 marks nodes read-only
    one by one, so the root's flag is not enough)."""
    with contextlib.ExitStack() as stack:
        for node in (config, *(OmegaConf.select(config, k) for k in keys)):
            stack.enter_context(read_write(node))
            stack.enter_context(open_dict(node))
        yield


def search_name(config: DictConfig) -> str | None:
    choice = OmegaConf.select(config, "hydra.runtime.choices.hparams_search", default=None)
    return str(choice).replace("/", "-") if choice else None


def default_storage(config: DictConfig, study_name: str) -> str:
    """sqlite:///<output root>/optuna/<study_name>.db: the study name is a file name there."""
    if "?" in study_name or "%" in study_name:
        # SQLAlchemy reads them as URL syntax: exp?mode=ro opened a file named "exp", and
        # a%20b one named "a b.db".
        raise SweepConfigError(
            f"hydra.sweeper.study_name={study_name}: with the default storage the study name "
            "is a file name in <paths.output_root>/optuna/ and may not hold ? or %; choose "
            "another, or set hydra.sweeper.storage"
        )
    root = OmegaConf.select(config, "paths.output_root", default=None)
    root_path = Path(str(root)) if root else Path.cwd() / "outputs"
    return f"sqlite:///{root_path.resolve() / 'optuna' / study_name}.db"


def quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
