"""Selecting and arranging runs: --where filters, the differing keys, grouping over seeds,
sorting, --top. The result is a `Table` of raw values (rnnlab.compare.render shows it)."""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rnnlab.compare.fields import (
    AGGREGATED,
    ALIASES,
    HIGHER_IS_BETTER,
    IGNORED_GROUPS,
    IGNORED_KEYS,
    IGNORED_PREFIXES,
    OUTCOME_COLUMNS,
    SEED_KEY,
    CompareError,
    as_number,
    compact_target,
    finite_number,
    is_number,
)
from rnnlab.compare.rundirs import Found, Run
from rnnlab.runs import Direction

_WHERE = re.compile(r"^\s*([^=!<>\s][^=!<>]*?)\s*(!=|>=|<=|=|>|<)(.*)$")
_COMPARE = {
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


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
        if where.op in _COMPARE and as_number(where.value) is None:
            raise CompareError(f"--where {text!r}: {where.op} needs a number, not {where.value!r}")
        return where

    def __call__(self, run: Run) -> bool:
        value = run.value(self.key)
        if self.op in ("=", "!="):
            hit = any(_equals(value, want, self.key) for want in self.value.split(","))
            return hit if self.op == "=" else not hit
        number = as_number(value)
        bound = as_number(self.value)
        if number is None or bound is None:
            return False
        return _COMPARE[self.op](number, bound)


def _equals(value: Any, want: str, key: str) -> bool:
    want = want.strip()
    if value is None:
        return want.lower() in ("null", "none", "~", "")
    if isinstance(value, bool):
        return want.lower() == str(value).lower()
    if is_number(value):
        number, wanted = as_number(value), as_number(want)
        if number is None or wanted is None:  # an int too large for a float
            return str(value) == want
        return math.isclose(number, wanted, rel_tol=1e-9, abs_tol=0.0)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text == want:
        return True
    # optimizer._target_=Adam matches torch.optim.Adam, as the table shows it.
    return key.endswith("_target_") and isinstance(value, str) and compact_target(value) == want


def _canon(value: Any) -> Any:
    """A hashable stand-in for a config value: lists and dicts become their JSON text, and
    every NaN the same text (NaN != NaN would make each run's value differ)."""
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, default=str)
    if value != value:
        return "NaN"
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
    if len(listed) > 2000:
        listed = listed[:2000] + ", ..."
    raise CompareError(f"{option} {key}: no run has this key; keys are: {listed}")


@dataclass(kw_only=True)
class Table:
    """What `rnnlab compare` shows: rows of raw values, and the runs behind each row."""

    columns: list[str]  # keys of `rows`, in display order
    rows: list[dict[str, Any]]
    row_runs: list[list[Run]]  # the run(s) behind each row (several when grouped)
    settings: list[str]  # the config columns: what tells rows apart (legend of the plots)
    varying: list[str]  # the config keys that differ across the selected runs
    grouped: bool
    metric: str | None  # the optimized_metric shared by the runs (None if mixed)
    mode: Direction
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
    # Only text counts: a summary with an odd value here (a list, a number) is outvoted.
    metrics = {m if isinstance(m, str) else None for m in _field(selected, "optimized_metric")}
    metric = metrics.pop() if len(metrics) == 1 else None
    modes = _field(selected, "objective_mode")
    mode = (
        Direction.MIN
        if modes.count(Direction.MIN.value) > modes.count(Direction.MAX.value)
        else Direction.MAX
    )

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
    descending = (mode is Direction.MAX) if key == "objective" else key in HIGHER_IS_BETTER
    if reverse:
        descending = not descending
    order = _order(rows, key, descending, best_first=mode is Direction.MAX)
    rows = [rows[i] for i in order]
    row_runs = [row_runs[i] for i in order]
    if top is not None:
        rows, row_runs = rows[:top], row_runs[:top]
    return Table(
        columns=cols,
        rows=rows,
        row_runs=row_runs,
        settings=setting_keys,
        varying=varying,
        grouped=group_by_seed,
        metric=metric,
        mode=mode,
        selected=selected,
        incomplete=incomplete,
        skipped=list(found.skipped),
        total=len(found.runs),
    )


def _field(selected: Sequence[Run], key: str) -> list[Any]:
    return [r.summary.get(key) for r in selected]


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
            numbers = [n for n in map(_finite, values) if n is not None]
            if numbers and len(numbers) == sum(v is not None for v in values):
                row[key] = statistics.fmean(numbers)
                row[f"{key}_std"] = statistics.stdev(numbers) if len(numbers) > 1 else None
            elif key not in AGGREGATED:
                distinct = list(dict.fromkeys(str(v) for v in values))
                row[key] = distinct[0] if len(distinct) == 1 else ", ".join(distinct)
            else:  # NaN: shown as n/a when some value was there but is no number
                row[key] = math.nan if any(v is not None for v in values) else None
                row[f"{key}_std"] = None
        row["run_dir"] = [str(m.path) for m in members]
        rows.append(row)
    return rows, list(groups.values())


def _finite(value: Any) -> float | None:
    """A JSON number that can be averaged (not text, not NaN or Infinity)."""
    return finite_number(value) if is_number(value) else None


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
    """Numbers first (in order), then text, then missing values."""
    if _missing(value):
        return (2, 0.0, "")
    number = as_number(value) if not isinstance(value, str) else None
    if number is not None:
        return (0, -number if negate else number, "")
    return (1, 0.0, value if isinstance(value, str) else json.dumps(value, default=str))
