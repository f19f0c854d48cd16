"""Finding run folders under the given paths and reading each into a `Run`.

A folder is a run when it holds summary.json or .hydra/. A schema_version 2 summary.json
records the resolved config (dotted keys) and the config-group choices, so it is the only
file read; for version 1 the config comes from .hydra/ (rnnlab.compare.v1, which
imports PyYAML: only loaded when a v1 folder is met). Reading never raises and never
writes: what is wrong with a folder ends up in `Run.problem`, one line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnlab import runs
from rnnlab.compare.fields import ALIASES, CompareError
from rnnlab.compare.files import (
    TooDeep,
    Unreadable,
    as_choice,
    count_lines,
    flatten,
    load_json,
    one_line,
    read_bytes,
)

# The summary.json versions this reader understands: 1 (config in .hydra/), 2 (in the file).
SCHEMA_VERSIONS = (1, 2)
# Pseudo filesystems met while walking from above (`rnnlab compare /`): never runs, and
# /proc alone holds millions of entries.
NOT_WALKED = frozenset({"/proc", "/sys", "/dev"})


class Run:
    """One run folder as read from disk; `problem` says why it cannot be compared.

    `config` (flattened, dotted keys) and `choices` (the config groups' choices) of a run
    without summary.json are read from .hydra/ on first use: only --where, --sort and
    --columns ask for them, and a table of finished v2 runs then needs no YAML at all.
    """

    __slots__ = ("path", "summary", "_config", "_choices", "problem", "_from_hydra")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.summary: dict[str, Any] = {}
        self._config: dict[str, Any] = {}
        self._choices: dict[str, str | None] | None = None
        self.problem: str | None = None
        self._from_hydra = False  # config and choices still to be read from .hydra/

    @property
    def config(self) -> dict[str, Any]:
        if self._from_hydra:
            _read_v1(self)
        return self._config

    @config.setter
    def config(self, value: dict[str, Any]) -> None:
        self._config = value

    @property
    def choices(self) -> dict[str, str | None] | None:
        if self._from_hydra:
            _read_v1(self)
        return self._choices

    @choices.setter
    def choices(self, value: dict[str, str | None] | None) -> None:
        self._choices = value

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, problem={self.problem!r})"

    @property
    def status(self) -> str:
        status = self.summary.get("status")
        return status if isinstance(status, str) else "incomplete"

    def value(self, key: str) -> Any:
        """The value of a summary field, config key or group choice (in that order)."""
        key = ALIASES.get(key, key)
        if key == "run_dir":
            return str(self.path)
        if key == "status":
            return self.status
        if key in self.summary:
            return self.summary[key]
        if key in self.config:
            return self.config[key]
        if self.choices and key in self.choices:
            return self.choices[key]
        if "." in key:  # a nested summary field, e.g. versions.torch or data_sizes.train
            node: Any = self.summary
            for part in key.split("."):
                if not isinstance(node, dict) or part not in node:
                    return None
                node = node[part]
            return node
        return None

    def has(self, key: str) -> bool:
        key = ALIASES.get(key, key)
        if key in ("run_dir", "status") or key in self.summary or key in self.config:
            return True
        if self.choices and key in self.choices:
            return True
        return "." in key and self.value(key) is not None


class Found:
    """What find_runs met: comparable runs, runs that cannot be compared, other folders."""

    __slots__ = ("runs", "incomplete", "skipped")

    def __init__(self) -> None:
        self.runs: list[Run] = []
        self.incomplete: list[Run] = []  # `problem` says why
        self.skipped: list[tuple[str, str]] = []  # (path, reason): folders that are not runs


def find_runs(paths: Sequence[str | os.PathLike[str]]) -> Found:
    """Every run folder under `paths` (recursively), read; raises CompareError for bad PATHs."""
    found = Found()
    seen: set[str] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CompareError(f"{raw}: no such file or folder")
        if not path.is_dir():
            if path.name != runs.SUMMARY_FILE:
                raise CompareError(f"{raw}: not a folder (give a run, sweep or outputs folder)")
            path = path.parent
        before = len(found.runs) + len(found.incomplete)
        _walk(os.path.abspath(path), found, seen)
        if len(found.runs) + len(found.incomplete) == before and not is_sweep_dir(path):
            found.skipped.append((str(raw), "no run folders under it"))
    return found


def is_sweep_dir(path: Path) -> bool:
    """A multirun's folder (it has jobs, or will have): a folder without runs that is not
    "a folder that is not a run"."""
    return any((path / name).is_file() for name in runs.SWEEP_FILES)


def _walk(top: str, found: Found, seen: set[str]) -> None:
    stack = [top]
    while stack:
        folder = stack.pop()
        if folder in seen:
            continue
        seen.add(folder)
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as e:
            found.skipped.append((folder, f"cannot list it: {e.strerror or e}"))
            continue
        names = {e.name for e in entries}
        if runs.HYDRA_DIR in names or runs.SUMMARY_FILE in names:
            run = read_run(Path(folder))
            (found.incomplete if run.problem else found.runs).append(run)
            continue
        subdirs = [
            e.path
            for e in entries
            if not e.name.startswith(".")
            and e.name != "__pycache__"
            and e.path not in NOT_WALKED
            and _is_dir(e)
        ]
        if subdirs:
            # Reversed so that popping visits folders in name order (job 0, 1, 2, ...).
            stack.extend(sorted(subdirs, key=_natural, reverse=True))
        elif (
            folder != top
            and any(not e.name.startswith(".") for e in entries)
            and not names.intersection(runs.SWEEP_FILES)
        ):
            found.skipped.append((folder, "not a run folder (no .hydra/ or summary.json)"))


def _natural(path: str) -> tuple[int, int, str]:
    """Job folders 0, 1, 2, ..., 10 in numeric order, then the other names."""
    name = os.path.basename(path)
    return (0, int(name), "") if name.isdigit() and len(name) < 18 else (1, 0, name)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:  # symlinked folders are not followed: they could loop or point at the same runs
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def read_run(path: Path) -> Run:
    """Read one run folder; never raises: what is wrong ends up in `problem`."""
    run = Run(path)
    try:
        summary = load_json(read_bytes(path / runs.SUMMARY_FILE))
    except FileNotFoundError:
        epochs = max(0, count_lines(path / runs.METRICS_FILE) - 1)
        run.problem = "no summary.json: still running or crashed" + (
            f" ({epochs} epoch(s) in metrics.csv)" if epochs else ""
        )
        run._from_hydra = True
        return run
    except (Unreadable, TooDeep) as e:
        run.problem = f"summary.json {e}"
        return run
    except ValueError as e:
        run.problem = f"summary.json is not valid JSON (half-written?): {one_line(e)}"
        return run
    if not isinstance(summary, dict):
        run.problem = "summary.json is not a JSON object"
        return run
    run.summary = summary
    run.problem = _summary_problem(summary)
    version = summary.get("schema_version")
    if type(version) is int and version == 1:
        _read_v1(run)
    elif type(version) is int and version == 2:
        problem = _read_v2(run)  # also for an incomplete run: --where applies to it too
        run.problem = run.problem or problem
    return run


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _summary_problem(summary: dict[str, Any]) -> str | None:
    version = summary.get("schema_version")
    if isinstance(version, bool) or version not in SCHEMA_VERSIONS:
        return (
            f"summary.json has schema_version {_short(version)}; this rnnlab reads "
            + " and ".join(map(str, SCHEMA_VERSIONS))
        )
    status = summary.get("status")
    if status == runs.Status.INTERRUPTED:
        reason = summary.get("reason") or "no reason given"
        return f"interrupted ({reason if isinstance(reason, str) else _short(reason)}); resume it"
    if status == runs.Status.RUNNING:
        return "still running"
    if not isinstance(status, str) or status not in runs.FINAL_STATUSES:
        return f"unknown status {_short(status)}"
    return None


def _read_v2(run: Run) -> str | None:
    """The config and choices recorded in a v2 summary.json; the problem, if any."""
    config = run.summary.pop("config", None)
    choices = run.summary.pop("choices", None)
    if not isinstance(config, dict):
        return "summary.json (schema_version 2) has no config object"
    if not isinstance(choices, dict):
        return "summary.json (schema_version 2) has no choices object"
    run.config = flatten(config)  # already flat as written; nested if someone nested it
    run.choices = {str(k): as_choice(v) for k, v in choices.items()}
    return None


def _read_v1(run: Run) -> None:
    """Config and choices from .hydra/ (summary.json schema_version 1, or no summary)."""
    import rnnlab.compare.v1 as v1  # PyYAML: only when such a folder is met

    run._from_hydra = False
    try:
        run.config = v1.read_config(run.path)
    except (OSError, Unreadable, *v1.YAML_ERRORS) as e:
        run.problem = run.problem or v1.problem(e)
    run.choices = v1.read_choices(run.path, run.summary)
