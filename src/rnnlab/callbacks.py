"""Hydra callbacks of rnnlab (registered in conf/hydra/default.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rnnlab import runs

log = logging.getLogger(__name__)


class MultirunSummary(Callback):
    """At the end of every multirun: print the best `top` runs and write `summary.md`.

    The table is `rnnlab compare <sweep dir> --top 10`. A failure here is logged, never
    raised: the sweep's runs are already on disk and must not be reported as failed.
    """

    def __init__(self, top: int = 10, filename: str = runs.SWEEP_SUMMARY_FILE) -> None:
        self.top = top
        self.filename = filename

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
        except Exception as e:  # noqa: BLE001 - an unresolvable sweep dir: nothing to do
            log.warning("no end-of-sweep summary: cannot resolve hydra.sweep.dir (%s)", e)
            return
        try:
            write_summary(sweep_dir, self.top, self.filename)
        except Exception as e:  # noqa: BLE001 - see the class docstring
            log.warning("no end-of-sweep summary for %s: %s: %s", sweep_dir, type(e).__name__, e)


def write_summary(
    sweep_dir: Path, top: int = 10, filename: str = runs.SWEEP_SUMMARY_FILE
) -> Path | None:
    """Print the top-`top` table of the runs under `sweep_dir`; write it as `filename` there."""
    from rnnlab import compare  # not at the top: Hydra imports callbacks in every run

    if not sweep_dir.is_dir():
        log.warning("no end-of-sweep summary: %s does not exist", sweep_dir)
        return None
    table = compare.build_table(compare.find_runs([sweep_dir]), top=top)
    title = f"Sweep {sweep_dir}: top {min(top, len(table.rows))} of {table.total} runs"
    print()
    compare.print_table(table, title=title)
    path = sweep_dir / filename
    runs.atomic_write(path, compare.to_markdown(table, title=title, base=sweep_dir))
    print(f"summary: {path}  (more: rnnlab compare {sweep_dir} --plot DIR --html FILE)")
    return path
