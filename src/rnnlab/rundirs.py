"""Run and sweep folders that no two processes share, and that can be written.

`hydra.run.dir` and `hydra.sweep.dir` go through `${unique_dir:<base>}`: the first process to
ask for `<base>` creates it (an atomic mkdir); a process that finds it taken (two runs started
in the same second) gets `<base>_1`, `<base>_2`, ... The answer is remembered for the process,
and Hydra's resolver cache carries it into the jobs of a multirun, so every evaluation in one
run or sweep returns the same folder.

`CheckOutputDir` (a Hydra callback) makes sure the folder can be written before anything runs,
so a read-only or missing location is one line, not a traceback from Hydra's own mkdir.
"""

from __future__ import annotations

import errno
import itertools
import os
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import fail

_claimed: dict[str, str] = {}
PROBE_BYTES = 64 * 1024  # more than Hydra's .hydra/*.yaml files take


def unique_dir(base: str) -> str:
    """`base`, created now, or `base_<n>` for the first n whose folder did not exist yet."""
    if base in _claimed:
        return _claimed[base]
    path = Path(base)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for n in itertools.count():
            candidate = path if n == 0 else path.with_name(f"{path.name}_{n}")
            try:
                candidate.mkdir()
            except FileExistsError:
                continue
            path = candidate
            break
    except OSError:
        # A resolver cannot report an error in one line (OmegaConf wraps it in a traceback):
        # hand the folder back unclaimed; CheckOutputDir says what is wrong with it.
        return base
    _claimed[base] = str(path)
    return str(path)


def check_writable(folder: Path, key: str) -> None:
    """Exit with one line naming `key` when `folder` cannot be created or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Some bytes, not an empty file: a full disk still lets one create an empty file,
        # and Hydra's own .hydra/*.yaml would then fail with a traceback.
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(bytes(PROBE_BYTES))
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        hint = " (free some space)" if e.errno == errno.ENOSPC else ""
        fail(f"{key}={folder}: cannot write the output folder: {reason}{hint}", code=1)


class CheckOutputDir(Callback):
    """Before a run or a sweep starts: its folder must be writable."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(str(OmegaConf.select(config, "hydra.run.dir"))), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        check_writable(sweep_dir, "hydra.sweep.dir")
