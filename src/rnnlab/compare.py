"""`rnnlab compare PATH...`: which settings won, by how much, and by more than seed noise?

Reads run folders (see rnnlab.runs) found anywhere under the given paths and prints one
table: the config keys that differ across the selected runs, then the outcome of each run.
Nothing under PATH is ever written. Folders that cannot be compared (no summary.json yet,
a half-written or older-schema summary, an interrupted run, a folder that is not a run)
are listed below the table with the reason, one line each.

Reading stays cheap on purpose (1,000 runs well under 2 s): only the standard library,
PyYAML's C loader and rich are imported here; matplotlib and optuna load only for
--plot / --html (rnnlab.report).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from rnnlab import runs

HYDRA_DIR = ".hydra"
# Keys that differ between runs for reasons unrelated to the result (where a run was
# written, how it was resumed, which Optuna trial it was); never a "differing" column.
IGNORED_PREFIXES = ("paths.", "hydra.", "trial.")
IGNORED_KEYS = frozenset({"resume", "trial"})
IGNORED_GROUPS = frozenset({"hydra", "paths"})
SEED_KEY = "seed"
# Files that mark a sweep folder; such a folder without runs is not "a folder that is not
# a run", it just has no jobs yet.
SWEEP_FILES = ("multirun.yaml", "optimization_results.yaml", "trials.csv", "summary.md")
TRIALS_FILE = "trials.csv"
OPTUNA_RESULTS_FILE = "optimization_results.yaml"

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

try:  # libyaml parses a Hydra config.yaml ~7x faster than the pure-Python loader
    _YamlLoader: Any = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML built without libyaml
    _YamlLoader = yaml.SafeLoader


class CompareError(Exception):
    """A mistake in the command line; reported as one `rnnlab: error:` line."""


# ---------------------------------------------------------------------------------------
# Finding and reading run folders
# ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """One run folder as read from disk; `problem` says why it cannot be compared."""

    path: Path
    summary: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # flattened, dotted keys
    choices: dict[str, Any] | None = None  # Hydra's config-group choices (hydra.yaml)
    problem: str | None = None

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


@dataclass
class Found:
    runs: list[Run]  # comparable runs
    incomplete: list[Run]  # run folders that cannot be compared (problem says why)
    skipped: list[tuple[str, str]]  # (path, reason) for folders that are not runs


def find_runs(paths: Sequence[str | os.PathLike[str]]) -> Found:
    """Every run folder under `paths` (recursively), read; raises CompareError for bad PATHs."""
    found = Found([], [], [])
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise CompareError(f"{raw}: no such file or folder")
        if path.is_file():
            if path.name != runs.SUMMARY_FILE:
                raise CompareError(f"{raw}: not a folder (give a run, sweep or outputs folder)")
            path = path.parent
        before = len(found.runs) + len(found.incomplete)
        _walk(path.absolute(), found, seen)
        if len(found.runs) + len(found.incomplete) == before and not _is_sweep_dir(path):
            found.skipped.append((str(raw), "no run folders under it"))
    return found


def _is_sweep_dir(path: Path) -> bool:
    return any((path / name).is_file() for name in SWEEP_FILES)


def _walk(top: Path, found: Found, seen: set[Path]) -> None:
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
            found.skipped.append((str(folder), f"cannot list it: {e.strerror or e}"))
            continue
        names = {e.name for e in entries}
        if HYDRA_DIR in names or runs.SUMMARY_FILE in names:
            run = read_run(folder)
            (found.incomplete if run.problem else found.runs).append(run)
            continue
        subdirs = [
            Path(e.path)
            for e in entries
            if not e.name.startswith(".") and e.name != "__pycache__" and _is_dir(e)
        ]
        if subdirs:
            # Reversed so that popping visits folders in name order (job 0, 1, 2, ...).
            stack.extend(sorted(subdirs, key=_natural, reverse=True))
        elif (
            folder != top
            and any(not e.name.startswith(".") for e in entries)
            and not names.intersection(SWEEP_FILES)
        ):
            found.skipped.append((str(folder), "not a run folder (no .hydra/ or summary.json)"))


def _natural(path: Path) -> tuple[int, int, str]:
    """Job folders 0, 1, 2, ..., 10 in numeric order, then the other names."""
    name = path.name
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:  # symlinked folders are not followed: they could loop or point at the same runs
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def read_run(path: Path) -> Run:
    """Read one run folder; never raises: what is wrong ends up in `problem`."""
    run = Run(path)
    try:
        text = (path / runs.SUMMARY_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        epochs = _count_metric_rows(path)
        run.problem = "no summary.json: still running or crashed" + (
            f" ({epochs} epoch(s) in metrics.csv)" if epochs else ""
        )
    except (OSError, UnicodeDecodeError) as e:
        run.problem = f"summary.json unreadable: {_one_line(e)}"
    else:
        try:
            summary = json.loads(text)
        except ValueError as e:
            summary = None
            run.problem = f"summary.json is not valid JSON (half-written?): {_one_line(e)}"
        if summary is not None and not isinstance(summary, dict):
            run.problem = "summary.json is not a JSON object"
        elif summary is not None:
            run.summary = summary
            run.problem = _summary_problem(summary)
    _read_config(run)
    return run


def _summary_problem(summary: dict[str, Any]) -> str | None:
    version = summary.get("schema_version")
    if version != runs.SCHEMA_VERSION:
        return f"summary.json has schema_version {version}; this rnnlab reads {runs.SCHEMA_VERSION}"
    status = summary.get("status")
    if status == "interrupted":
        return f"interrupted ({summary.get('reason') or 'no reason given'}); resume it"
    if status == "running":
        return "still running"
    if status not in runs.FINAL_STATUSES:
        return f"unknown status {status!r}"
    return None


def _read_config(run: Run) -> None:
    hydra_dir = run.path / HYDRA_DIR
    try:
        config = load_yaml((hydra_dir / "config.yaml").read_text(encoding="utf-8"))
        if not isinstance(config, dict):
            raise ValueError("not a mapping")
        run.config = flatten(config)
    except FileNotFoundError:
        run.problem = run.problem or "no .hydra/config.yaml"
    except (OSError, ValueError, yaml.YAMLError) as e:
        run.problem = run.problem or f".hydra/config.yaml unreadable: {_one_line(e)}"
    run.choices = _read_choices(hydra_dir / "hydra.yaml")


def _read_choices(path: Path) -> dict[str, Any] | None:
    """hydra.runtime.choices from hydra.yaml, found by a text scan of its block.

    hydra.yaml is ~170 lines of Hydra's own settings; parsing all of it for ten lines would
    triple the reading time of a run.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    start = text.find("\n    choices:\n")
    if start < 0:
        return None
    choices: dict[str, Any] = {}
    for line in text[start + 14 :].splitlines():
        if not line.startswith("      ") or line[6] == " ":
            break
        key, sep, value = line.strip().partition(": ")
        if not sep and line.rstrip().endswith(":"):
            key, value = line.strip()[:-1], "null"
        if key.startswith("hydra/"):
            continue
        choices[key] = None if value in ("null", "") else value.strip("'\"")
    return choices


def load_yaml(text: str) -> Any:
    """YAML as PyYAML's safe loader reads it, fast for the YAML that Hydra writes.

    Hydra's config.yaml and overrides.yaml are block mappings and lists of plain scalars;
    those are parsed here, ~10x faster than PyYAML even with libyaml (its constructor is
    Python). Anything else (quotes with escapes, flow collections, anchors, block strings,
    YAML 1.1 oddities such as dates or octals) goes to PyYAML, so the result is the same.
    """
    try:
        return _fast_yaml(text)
    except _Unsupported:
        return yaml.load(text, Loader=_YamlLoader)


class _Unsupported(Exception):
    pass


_YAML_KEY = re.compile(r"[A-Za-z_][\w./-]*\Z")
_YAML_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_YAML_FLOAT = re.compile(r"[-+]?[0-9]+\.[0-9]*(?:[eE][-+][0-9]+)?\Z")
_YAML_WORDS: dict[str, Any] = {
    **dict.fromkeys(("null", "Null", "NULL", "~"), None),
    **dict.fromkeys(("true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"), True),
    **dict.fromkeys(("false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"), False),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
}


def _fast_yaml(text: str) -> Any:
    lines = []
    for raw in text.split("\n"):
        content = raw.strip()
        if not content or content.startswith("#"):
            continue
        if "\t" in raw or content.startswith(("---", "...", "%")):
            raise _Unsupported
        lines.append((len(raw) - len(raw.lstrip(" ")), content))
    if not lines:
        return None
    value, pos = _yaml_block(lines, 0, lines[0][0])
    if pos != len(lines):
        raise _Unsupported
    return value


def _is_item(content: str) -> bool:
    return content == "-" or content.startswith("- ")


def _yaml_block(lines: list[tuple[int, str]], pos: int, indent: int) -> tuple[Any, int]:
    if _is_item(lines[pos][1]):
        return _yaml_seq(lines, pos, indent)
    out: dict[str, Any] = {}
    while pos < len(lines):
        ind, content = lines[pos]
        if ind < indent:
            break
        if ind > indent or _is_item(content):
            raise _Unsupported
        key, sep, rest = content.partition(":")
        if not sep or not _YAML_KEY.match(key) or (rest and rest[0] != " ") or key in out:
            raise _Unsupported
        rest = rest.strip()
        pos += 1
        nxt = lines[pos] if pos < len(lines) else None
        if rest:
            out[key] = _yaml_scalar(rest)
        elif nxt is not None and nxt[0] > indent:
            out[key], pos = _yaml_block(lines, pos, nxt[0])
        elif nxt is not None and nxt[0] == indent and _is_item(nxt[1]):
            out[key], pos = _yaml_seq(lines, pos, indent)
        else:
            out[key] = None
    return out, pos


def _yaml_seq(lines: list[tuple[int, str]], pos: int, indent: int) -> tuple[list[Any], int]:
    out = []
    while pos < len(lines):
        ind, content = lines[pos]
        if ind < indent or (ind == indent and not _is_item(content)):
            break
        if ind > indent:
            raise _Unsupported
        item = content[1:].strip()
        if not item:
            raise _Unsupported
        out.append(_yaml_scalar(item))
        pos += 1
    return out, pos


def _yaml_scalar(v: str) -> Any:
    if v in _YAML_WORDS:
        return _YAML_WORDS[v]
    if _YAML_INT.match(v):
        return int(v)
    if _YAML_FLOAT.match(v):
        return float(v)
    if v in ("[]", "{}"):
        return [] if v == "[]" else {}
    if len(v) >= 2 and v[0] == v[-1] == "'" and "'" not in v[1:-1].replace("''", ""):
        return v[1:-1].replace("''", "'")
    if len(v) >= 2 and v[0] == v[-1] == '"' and not any(c in v[1:-1] for c in '"\\'):
        return v[1:-1]
    if not (v[0].isalpha() or v[0] in "_$/") or ": " in v or " #" in v or v.endswith(":"):
        raise _Unsupported  # numbers in other notations, dates, flow collections, tags...
    return v


def _count_metric_rows(path: Path) -> int:
    try:
        with open(path / runs.METRICS_FILE, "rb") as f:
            return max(0, sum(1 for _ in f) - 1)
    except OSError:
        return 0


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


# ---------------------------------------------------------------------------------------
# Selecting: filters, differing keys, sorting, grouping over seeds
# ---------------------------------------------------------------------------------------


_WHERE = re.compile(r"^\s*([^=!<>\s][^=!<>]*?)\s*(!=|>=|<=|=|>|<)(.*)$")


@dataclass
class Where:
    key: str
    op: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Where:
        m = _WHERE.match(text)
        if not m:
            raise CompareError(
                f"--where {text!r}: expected KEY=VALUE (or KEY!=VALUE, "
                "KEY>VALUE, KEY<VALUE, KEY>=VALUE, KEY<=VALUE)"
            )
        where = cls(m.group(1), m.group(2), m.group(3).strip())
        if where.op in ("<", ">", "<=", ">=") and _as_number(where.value) is None:
            raise CompareError(f"--where {text!r}: {where.op} needs a number, not {where.value!r}")
        return where

    def __call__(self, run: Run) -> bool:
        value = run.value(self.key)
        if self.op in ("=", "!="):
            hit = any(_equals(value, want, self.key) for want in self.value.split(","))
            return hit if self.op == "=" else not hit
        number = _as_number(value)
        bound = _as_number(self.value)
        if number is None or bound is None:
            return False
        return {
            ">": number > bound,
            "<": number < bound,
            ">=": number >= bound,
            "<=": number <= bound,
        }[self.op]


def _equals(value: Any, want: str, key: str) -> bool:
    want = want.strip()
    if value is None:
        return want.lower() in ("null", "none", "~", "")
    if isinstance(value, bool):
        return want.lower() == str(value).lower()
    if isinstance(value, int | float):
        number = _as_number(want)
        return number is not None and math.isclose(value, number, rel_tol=1e-9, abs_tol=0.0)
    text = value if isinstance(value, str) else json.dumps(value)
    if text == want:
        return True
    # optimizer._target_=Adam matches torch.optim.Adam, as the table shows it.
    return key.endswith("_target_") and isinstance(value, str) and compact_target(value) == want


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def compact_target(value: str) -> str:
    """torch.optim.Adam -> Adam: a class path shown by its last component."""
    return value.rsplit(".", 1)[-1]


def _canon(value: Any) -> Any:
    """A hashable stand-in for a config value (lists and dicts become their JSON)."""
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, float) and value.is_integer():
        return value  # 1.0 and 1 stay distinct through the type, as in the config
    return value


_MISSING = object()


def differing_keys(selected: Sequence[Run]) -> list[str]:
    """Config keys (and group choices) whose values differ across `selected`, seed last.

    A config group whose choice differs (model=rnn vs model=gru) shows as one column named
    after the group; its keys that merely follow from the choice (model.cell) are left out.
    """
    if len(selected) < 2:
        return []
    keys: dict[str, None] = {}
    for run in selected:
        keys.update(dict.fromkeys(run.config))
    differ = [
        k
        for k in keys
        if k not in IGNORED_KEYS
        and not k.startswith(IGNORED_PREFIXES)
        and len({_canon(r.config.get(k, _MISSING)) for r in selected}) > 1
    ]
    groups: list[str] = []
    if all(r.choices is not None for r in selected):
        names: dict[str, None] = {}
        for run in selected:
            names.update(dict.fromkeys(run.choices or {}))
        groups = [
            g
            for g in names
            if g not in IGNORED_GROUPS
            and g not in keys
            and len({(r.choices or {}).get(g) for r in selected}) > 1
        ]
        for group in groups:
            prefix = group.replace("/", ".") + "."
            differ = [
                k
                for k in differ
                if not (k.startswith(prefix) and _follows_choice(selected, group, k))
            ]
    differ.sort(key=lambda k: k == SEED_KEY)
    return [*groups, *differ]


def _follows_choice(selected: Sequence[Run], group: str, key: str) -> bool:
    value_for: dict[Any, Any] = {}
    for run in selected:
        choice = (run.choices or {}).get(group)
        value = _canon(run.config.get(key, _MISSING))
        if value_for.setdefault(choice, value) != value:
            return False
    return True


def known_keys(selected: Iterable[Run]) -> list[str]:
    keys: dict[str, None] = dict.fromkeys(["run_dir", "status", *OUTCOME_COLUMNS])
    for run in selected:
        keys.update(dict.fromkeys(k for k, v in run.summary.items() if not isinstance(v, dict)))
        keys.update(dict.fromkeys(run.config))
        keys.update(dict.fromkeys(g for g in run.choices or {} if g not in IGNORED_GROUPS))
    return list(keys)


def _check_key(key: str, pool: Sequence[Run], option: str) -> None:
    if key in ALIASES or key in ("run_dir", "status") or any(r.has(key) for r in pool):
        return
    listed = ", ".join(k for k in known_keys(pool) if not k.startswith(IGNORED_PREFIXES))
    raise CompareError(f"{option} {key}: no run has this key; keys are: {listed}")


@dataclass
class Table:
    """What `rnnlab compare` shows: rows of raw values, and the runs behind each row."""

    columns: list[str]  # keys of `rows`, in display order
    rows: list[dict[str, Any]]
    row_runs: list[list[Run]]  # the run(s) behind each row (several when grouped)
    settings: list[str]  # the config columns: what tells rows apart (legend of the plots)
    varying: list[str]  # the config keys that differ across the selected runs
    grouped: bool
    metric: str | None  # the optimized_metric shared by the runs (None if mixed)
    mode: str  # max or min
    selected: list[Run]  # every run that passed --where (before --top)
    incomplete: list[Run]
    skipped: list[tuple[str, str]]
    total: int  # comparable runs found, before --where

    @property
    def objective_is_acc(self) -> bool:
        return bool(self.metric and self.metric.endswith("acc"))


def build_table(
    found: Found,
    where: Sequence[str] = (),
    sort: str | None = None,
    reverse: bool = False,
    top: int | None = None,
    group_by_seed: bool | None = None,
    columns: Sequence[str] = (),
) -> Table:
    """Filter, find the differing keys, group over seeds if asked (or if only seeds differ),
    sort and cut to `top`. Raises CompareError for an unknown key or a bad --where."""
    filters = [Where.parse(w) for w in where]
    pool = [*found.runs, *found.incomplete]
    for f in filters:
        _check_key(f.key, pool, "--where")
    extra = [ALIASES.get(c, c) for spec in columns for c in spec.split(",") if c.strip()]
    for key in extra:
        _check_key(key, pool, "--columns")
    if sort is not None:
        _check_key(sort, pool, "--sort")

    selected = [r for r in found.runs if all(f(r) for f in filters)]
    incomplete = [r for r in found.incomplete if all(f(r) for f in filters)]
    varying = differing_keys(selected)
    if group_by_seed is None:
        group_by_seed = varying == [SEED_KEY]
    metrics = {r.summary.get("optimized_metric") for r in selected}
    metric = metrics.pop() if len(metrics) == 1 else None
    modes = [r.summary.get("objective_mode") for r in selected]
    mode = "min" if modes and modes.count("min") > modes.count("max") else "max"

    setting_keys = [k for k in varying if not (group_by_seed and k == SEED_KEY)]
    setting_keys += [
        k
        for k in extra
        if k not in setting_keys
        and k not in OUTCOME_COLUMNS
        and any(k in r.config or k in (r.choices or {}) for r in selected)
    ]
    summary_extra = [k for k in extra if k not in setting_keys and k not in OUTCOME_COLUMNS]
    if group_by_seed:
        rows, row_runs = _group_rows(selected, setting_keys, summary_extra)
        cols = [*setting_keys, "n", "seeds", *OUTCOME_COLUMNS, *summary_extra, "run_dir"]
    else:
        rows = [_run_row(r, setting_keys, summary_extra) for r in selected]
        row_runs = [[r] for r in selected]
        cols = [*setting_keys, *OUTCOME_COLUMNS, *summary_extra, "run_dir"]

    key = ALIASES.get(sort, sort) if sort else "objective"
    descending = (mode == "max") if key == "objective" else key in HIGHER_IS_BETTER
    if reverse:
        descending = not descending
    order = _order(rows, key, descending, best_first=mode == "max")
    rows = [rows[i] for i in order]
    row_runs = [row_runs[i] for i in order]
    if top is not None:
        rows, row_runs = rows[:top], row_runs[:top]
    return Table(
        cols,
        rows,
        row_runs,
        setting_keys,
        varying,
        group_by_seed,
        metric,
        mode,
        selected,
        incomplete,
        list(found.skipped),
        len(found.runs),
    )


def _run_row(run: Run, setting_keys: Sequence[str], extra: Sequence[str]) -> dict[str, Any]:
    row = {k: run.value(k) for k in setting_keys}
    row.update({k: run.value(k) for k in OUTCOME_COLUMNS})
    row.update({k: run.value(k) for k in extra})
    row["run_dir"] = str(run.path)
    return row


def _group_rows(
    selected: Sequence[Run], setting_keys: Sequence[str], extra: Sequence[str]
) -> tuple[list[dict[str, Any]], list[list[Run]]]:
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for run in selected:
        groups.setdefault(tuple(_canon(run.value(k)) for k in setting_keys), []).append(run)
    rows = []
    for members in groups.values():
        row: dict[str, Any] = {k: members[0].value(k) for k in setting_keys}
        row["n"] = len(members)
        row["seeds"] = [m.value(SEED_KEY) for m in members]
        statuses = [m.status for m in members]
        row["status"] = (
            statuses[0]
            if len(set(statuses)) == 1
            else ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
        )
        for key in [*AGGREGATED, *extra]:
            values = [m.value(key) for m in members]
            numbers = [
                float(v)
                for v in values
                if _as_number(v) is not None and not isinstance(v, str) and math.isfinite(float(v))
            ]
            if numbers and len(numbers) == sum(v is not None for v in values):
                row[key] = statistics.fmean(numbers)
                row[f"{key}_std"] = statistics.stdev(numbers) if len(numbers) > 1 else None
            elif key not in AGGREGATED:
                distinct = list(dict.fromkeys(str(v) for v in values))
                row[key] = distinct[0] if len(distinct) == 1 else ", ".join(distinct)
            else:
                row[key], row[f"{key}_std"] = None, None
        row["run_dir"] = [str(m.path) for m in members]
        rows.append(row)
    return rows, list(groups.values())


def _order(
    rows: Sequence[dict[str, Any]], key: str, descending: bool, best_first: bool
) -> list[int]:
    """Row indices sorted on `key`; missing values last either way, ties best objective first."""
    # Python's sort is stable (also with reverse=True): sort on the tie-breaker first.
    order = sorted(range(len(rows)), key=lambda i: _value_key(rows[i].get("objective"), best_first))
    present = [i for i in order if not _missing(rows[i].get(key))]
    missing = [i for i in order if _missing(rows[i].get(key))]
    present.sort(key=lambda i: _value_key(rows[i][key]), reverse=descending)
    return present + missing


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _value_key(value: Any, negate: bool = False) -> tuple[int, float, str]:
    if _missing(value):
        return (2, 0.0, "")
    number = _as_number(value) if not isinstance(value, str) else None
    if number is not None:
        return (0, -number if negate else number, "")
    return (1, 0.0, value if isinstance(value, str) else json.dumps(value, sort_keys=True))


# ---------------------------------------------------------------------------------------
# Rendering: console, markdown, CSV, JSON
# ---------------------------------------------------------------------------------------


def export_columns(table: Table) -> list[str]:
    """Columns of the CSV and JSON rows: the table's, plus the spread of grouped values."""
    if not table.grouped:
        return list(table.columns)
    cols: list[str] = []
    for key in table.columns:
        cols.append(key)
        if any(f"{key}_std" in row for row in table.rows):
            cols.append(f"{key}_std")
    return cols


def header(table: Table, key: str) -> str:
    label = OUTCOME_COLUMNS.get(key, key)
    if key == "run_dir":
        label = "run dirs" if table.grouped else "run dir"
    if key == "objective" and table.metric:
        label = f"objective ({table.metric}{' %' if table.objective_is_acc else ''})"
    elif _is_acc(key):
        label += " %"
    return label


def _is_acc(key: str) -> bool:
    return key.endswith("_acc")


def cell(table: Table, row: dict[str, Any], key: str, base: Path | None = None) -> str:
    """The text shown for `row[key]`: percents, compact class paths, short times."""
    value = row.get(key)
    if key == "run_dir":
        return _show_dirs(value, base)
    if key == "seeds":
        return ",".join("–" if s is None else str(s) for s in value or [])
    if key in table.settings:
        return show_config(key, value)
    text = _show_metric(table, key, value)
    std = row.get(f"{key}_std")
    if table.grouped and key in AGGREGATED and value is not None and std is not None:
        text += f" ± {_show_metric(table, key, std)}"
    return text


def _show_metric(table: Table, key: str, value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return show_config(key, value)
    if key == "objective":
        return f"{100 * value:.2f}" if table.objective_is_acc else f"{value:.4f}"
    if _is_acc(key):
        return f"{100 * value:.2f}"
    if key == "wall_time_s":
        return _show_duration(value)
    if key == "train_samples_per_s":
        return f"{value:,.0f}"
    if key == "epochs_completed" and not table.grouped:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def show_config(key: str, value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return compact_target(value) if key.endswith("_target_") else value
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _show_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _show_dirs(value: Any, base: Path | None) -> str:
    if isinstance(value, list):
        paths = [Path(v) for v in value]
        parents = {p.parent for p in paths}
        if len(paths) > 1 and len(parents) == 1:
            names = ",".join(p.name for p in paths)
            return f"{_relative(paths[0].parent, base)}/{{{names}}}"
        return "; ".join(_relative(p, base) for p in paths)
    return _relative(Path(value), base) if value else "–"


def _relative(path: Path, base: Path | None) -> str:
    base = base or Path.cwd()
    try:
        rel = os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if rel.startswith("..") else rel


def display_rows(table: Table, base: Path | None = None) -> tuple[list[str], list[list[str]]]:
    headers = [header(table, k) for k in table.columns]
    return headers, [[cell(table, row, k, base) for k in table.columns] for row in table.rows]


def caption(table: Table) -> str:
    shown = len(table.rows)
    unit = "settings" if table.grouped else "runs"
    parts = [f"{shown} {unit}"]
    if table.grouped:
        parts[0] += f" ({len(table.selected)} runs, mean ± std over seeds)"
    if len(table.selected) != table.total:
        parts.append(f"{len(table.selected)} of {table.total} runs match --where")
    if table.metric:
        parts.append(f"objective = best {table.metric} over epochs ({table.mode})")
    if not table.varying:
        parts.append("no config key differs")
    return "; ".join(parts)


def problem_lines(table: Table, base: Path | None = None, limit: int = 20) -> list[str]:
    lines = [f"incomplete: {_relative(r.path, base)}: {r.problem}" for r in table.incomplete]
    lines += [f"skipped: {_relative(Path(p), base)}: {why}" for p, why in table.skipped]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more (all of them in --json)"]
    return lines


_STATUS_STYLE = {"completed": "green", "diverged": "red", "failed": "red", "pruned": "yellow"}


_ANSI = {
    "bold": "\x1b[1m",
    "dim": "\x1b[2m",
    "green": "\x1b[32m",
    "red": "\x1b[31m",
    "yellow": "\x1b[33m",
    "reset": "\x1b[0m",
}


def render_text(table: Table, title: str | None = None, color: bool = False) -> str:
    """The table as aligned plain text (ANSI-colored status when `color`).

    Hand-rolled rather than rich: rich measures every cell of every row several times and
    needs seconds for a 1,000-run table; this needs milliseconds.
    """
    headers, body = display_rows(table)

    def paint(text: str, style: str | None) -> str:
        return f"{_ANSI[style]}{text}{_ANSI['reset']}" if color and style else text

    out = [paint(title, "bold")] if title else []
    if not body:
        out.append(f"no comparable runs ({caption(table)})")
    else:
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
        right = [k in {*AGGREGATED, "n"} for k in table.columns]
        status_at = table.columns.index("status")

        def line(cells: Sequence[str], styles: Sequence[str | None]) -> str:
            parts = [
                paint(c.rjust(w) if r else c.ljust(w), st)
                for c, w, r, st in zip(cells[:-1], widths, right, styles, strict=False)
            ]
            # The last column is not padded: no trailing blanks, even inside color codes.
            parts.append(paint(cells[-1].rjust(widths[-1]) if right[-1] else cells[-1], styles[-1]))
            return " " + "   ".join(parts)

        out.append(line(headers, ["bold"] * len(headers)))
        out.append(" " + "─" * (sum(widths) + 3 * (len(widths) - 1)))
        for cells in body:
            styles: list[str | None] = [None] * len(cells)
            styles[status_at] = _STATUS_STYLE.get(cells[status_at].split(",")[0])
            out.append(line(cells, styles))
        out.append(paint(caption(table), "dim"))
    out += [paint(p, "dim") for p in problem_lines(table)]
    return "\n".join(out) + "\n"


def print_table(table: Table, file: Any = None, title: str | None = None) -> None:
    """The table on stdout (or `file`), then one line per incomplete or skipped folder."""
    out = file if file is not None else sys.stdout
    color = bool(getattr(out, "isatty", lambda: False)()) and "NO_COLOR" not in os.environ
    out.write(render_text(table, title, color))
    out.flush()


def to_markdown(table: Table, title: str | None = None, base: Path | None = None) -> str:
    headers, body = display_rows(table, base)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    right = {*AGGREGATED, "n"}
    align = ["---:" if k in right else "---" for k in table.columns]
    out = [f"# {title}", ""] if title else []
    out += [line(headers), "| " + " | ".join(align) + " |", *map(line, body), ""]
    out.append(caption(table))
    problems = problem_lines(table, base, limit=100)
    if problems:
        out += ["", *(f"- {p}" for p in problems)]
    return "\n".join(out) + "\n"


def to_csv(table: Table) -> str:
    cols = export_columns(table)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in table.rows:
        writer.writerow([_csv_value(row.get(k)) for k in cols])
    return buf.getvalue()


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join("" if v is None else str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def to_json(table: Table) -> str:
    cols = export_columns(table)
    doc = {
        "columns": cols,
        "group_by_seed": table.grouped,
        "optimized_metric": table.metric,
        "objective_mode": table.mode,
        "varying": table.varying,
        "rows": [{k: row.get(k) for k in cols} for row in table.rows],
        "incomplete": [
            {"run_dir": str(r.path), "status": r.status, "reason": r.problem}
            for r in table.incomplete
        ],
        "skipped": [{"path": p, "reason": why} for p, why in table.skipped],
    }
    return json.dumps(doc, indent=2, default=str) + "\n"


# ---------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------

EPILOG = """\
examples:
  rnnlab compare outputs/
  rnnlab compare outputs/multirun/2025-01-01/12-00-00 --top 10 --where status=completed
  rnnlab compare outputs/ --where model=gru --where optimizer.lr<=0.001 --sort test_acc
  rnnlab compare outputs/ --group-by-seed --markdown results.md --plot plots/ --html sweep.html

--where takes KEY=VALUE (also !=, <, >, <=, >=; VALUE may list alternatives: model=rnn,gru)
on any config key, config group (model, optimizer, ...), or summary.json field. Accuracies
are stored as fractions: --where best_val_acc>0.9. --sort puts the best first for the
objective and accuracies, ascending otherwise; --reverse flips it.
"""


def add_parser(subparsers: Any) -> Callable[[argparse.Namespace], int]:
    """Register `compare` on the `rnnlab` command; returns the function that runs it."""
    parser = subparsers.add_parser(
        "compare",
        help="compare runs and sweeps in one table",
        description="Compare run folders: one row per run (or per setting over seeds), "
        "with the config keys that differ across them.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(parser)
    return run_command


def configure_parser(parser: argparse.ArgumentParser) -> None:
    def error(message: str) -> NoReturn:
        # One line like every other rnnlab error, instead of argparse's usage + message.
        print(f"rnnlab: error: {message} (see rnnlab compare --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="run dirs, sweep dirs or any folder above them (searched recursively)",
    )
    parser.add_argument("--sort", metavar="KEY", help="sort by KEY (default: the objective)")
    parser.add_argument("--reverse", action="store_true", help="reverse the sort order")
    parser.add_argument("--top", type=_positive_int, metavar="N", help="show only the first N")
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep runs where KEY matches VALUE (repeatable: all must hold)",
    )
    parser.add_argument(
        "--columns",
        action="append",
        default=[],
        metavar="KEY[,KEY...]",
        help="add these config keys or summary fields as columns",
    )
    parser.add_argument(
        "--group-by-seed",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one row per setting, mean ± std over seeds (default: only "
        "when the runs differ in nothing but the seed)",
    )
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write the rows as CSV")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the rows as JSON")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the table as Markdown")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="DIR",
        help="write PNG plots (curves, objective vs hyperparameters, "
        "Optuna history and importances) into DIR",
    )
    parser.add_argument(
        "--html",
        type=Path,
        metavar="FILE",
        help="write one self-contained HTML page with the table and plots",
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="do not print the table (exports only)"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def run_command(args: argparse.Namespace) -> int:
    """Run `rnnlab compare` for parsed `args`; returns the exit code."""
    try:
        return _run(args)
    except CompareError as e:
        print(f"rnnlab: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `rnnlab compare ... | head`
        sys.stderr.close()
        return 0


def _run(args: argparse.Namespace) -> int:
    for option in ("csv", "json", "markdown", "html"):
        target = getattr(args, option)
        if target is not None and target.is_dir():
            raise CompareError(f"--{option} {target}: is a folder; give a file name")
    if args.plot is not None and args.plot.exists() and not args.plot.is_dir():
        raise CompareError(f"--plot {args.plot}: exists and is not a folder")
    found = find_runs(args.paths)
    table = build_table(
        found,
        where=args.where,
        sort=args.sort,
        reverse=args.reverse,
        top=args.top,
        group_by_seed=args.group_by_seed,
        columns=args.columns,
    )
    if not args.quiet:
        print_table(table)
    try:
        if args.csv:
            runs.atomic_write(args.csv, to_csv(table))
        if args.json:
            runs.atomic_write(args.json, to_json(table))
        if args.markdown:
            runs.atomic_write(args.markdown, to_markdown(table, base=args.markdown.parent))
        if args.plot or args.html:
            from rnnlab import report

            images = report.make_plots(table)
            if args.plot:
                report.write_plots(images, args.plot)
            if args.html:
                runs.atomic_write(args.html, report.to_html(table, images))
    except OSError as e:
        raise CompareError(f"cannot write {e.filename or ''}: {e.strerror or e}") from None
    if not found.runs and not found.incomplete:
        print(
            "rnnlab: error: no run folders found under " + " ".join(map(str, args.paths)),
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m rnnlab.compare PATH...`: the same command without the `rnnlab` wrapper."""
    parser = argparse.ArgumentParser(
        prog="rnnlab compare", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    configure_parser(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
