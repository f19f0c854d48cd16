"""Showing a Table: cell text, the console table, and the Markdown, CSV and JSON exports."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnlab import runs
from rnnlab.compare.fields import (
    AGGREGATED,
    NOT_AVAILABLE,
    NUMERIC_FIELDS,
    OUTCOME_COLUMNS,
    compact_target,
    finite_number,
    is_number,
)
from rnnlab.compare.select import Table

# Right-aligned columns (numbers).
NUMERIC_COLUMNS = frozenset({*AGGREGATED, "n"})
# Control characters in a folder name or a value (ESC sequences would drive the terminal, a
# newline would break the table) are shown escaped; so are the bytes of a file name that
# are not UTF-8 (Python's surrogate escapes, which a UTF-8 terminal refuses to print).
_CONTROL = {
    **{c: f"\\x{c:02x}" for c in (*range(32), *range(127, 160))},
    **{c: f"\\x{c - 0xDC00:02x}" for c in range(0xDC80, 0xDD00)},
    **{c: f"\\u{c:04x}" for c in (*range(0xD800, 0xDC80), *range(0xDD00, 0xE000))},
}
MAX_CELL = 200


def printable(text: str, limit: int | None = None) -> str:
    """`text` with control characters escaped, cut to `limit` characters."""
    text = text.translate(_CONTROL)
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


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
        return ",".join("–" if s is None else show_config(key, s) for s in value or [])
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
    if key == "status" and isinstance(value, str):
        return value
    number = finite_number(value) if is_number(value) else None
    if number is None:
        # NaN, Infinity, a number too large for a float, or text where a number belongs.
        return NOT_AVAILABLE if key in NUMERIC_FIELDS else show_config(key, value)
    if key == "objective":
        return f"{100 * number:.2f}" if table.objective_is_acc else f"{number:.4f}"
    if _is_acc(key):
        return f"{100 * number:.2f}"
    if key == "wall_time_s":
        return _show_duration(number)
    if key == "train_samples_per_s":
        return f"{number:,.0f}"
    if key == "epochs_completed" and not table.grouped:
        return str(int(number))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def show_config(key: str, value: Any) -> str:
    """A config value as text: null/true/false as in YAML, compact class paths."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return compact_target(value) if key.endswith("_target_") else value
    if isinstance(value, list | dict):
        return json.dumps(value, default=str)
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
    """Headers and cell texts of every row."""
    headers = [printable(header(table, k), MAX_CELL) for k in table.columns]
    limits = [None if k == "run_dir" else MAX_CELL for k in table.columns]
    return headers, [
        [
            printable(cell(table, row, k, base), n)
            for k, n in zip(table.columns, limits, strict=True)
        ]
        for row in table.rows
    ]


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
    return printable("; ".join(parts))


def problem_lines(table: Table, base: Path | None = None, limit: int = 20) -> list[str]:
    """One line per folder that is not in the table (incomplete or skipped), at most `limit`."""
    lines = [f"incomplete: {_relative(r.path, base)}: {r.problem}" for r in table.incomplete]
    lines += [f"skipped: {_relative(Path(p), base)}: {why}" for p, why in table.skipped]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more (all of them in --json)"]
    return [printable(line) for line in lines]


_STATUS_STYLE = {
    runs.Status.COMPLETED: "green",
    runs.Status.DIVERGED: "red",
    runs.Status.FAILED: "red",
    runs.Status.PRUNED: "yellow",
}
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

    out = [paint(printable(title), "bold")] if title else []
    if not body:
        out.append(f"no comparable runs ({caption(table)})")
    else:
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(headers)]
        right = [k in NUMERIC_COLUMNS for k in table.columns]
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

    align = ["---:" if k in NUMERIC_COLUMNS else "---" for k in table.columns]
    out = [f"# {printable(title)}", ""] if title else []
    out += [line(headers), "| " + " | ".join(align) + " |", *map(line, body), ""]
    out.append(caption(table))
    problems = problem_lines(table, base, limit=100)
    if problems:
        out += ["", *(f"- {p}" for p in problems)]
    return "\n".join(out) + "\n"


def to_csv(table: Table) -> bytes:
    """The rows as CSV (UTF-8; a file name that is not UTF-8 keeps its own bytes)."""
    cols = export_columns(table)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in table.rows:
        writer.writerow([_csv_value(row.get(k)) for k in cols])
    return buf.getvalue().encode("utf-8", "surrogateescape")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join("" if v is None else str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def to_json(table: Table) -> str:
    """The rows as JSON; NaN and Infinity (which JSON has no words for) become null."""
    cols = export_columns(table)
    doc = {
        "columns": cols,
        "group_by_seed": table.grouped,
        "optimized_metric": table.metric,
        "objective_mode": table.mode,
        "varying": table.varying,
        "rows": [{k: _json_value(row.get(k)) for k in cols} for row in table.rows],
        "incomplete": [
            {"run_dir": str(r.path), "status": r.status, "reason": r.problem}
            for r in table.incomplete
        ],
        "skipped": [{"path": p, "reason": why} for p, why in table.skipped],
    }
    return json.dumps(doc, indent=2, default=str) + "\n"


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and finite_number(value) is None:
        return None
    return value
