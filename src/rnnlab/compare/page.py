"""The self-contained HTML page of `rnnlab compare --html FILE`: the table and the plots."""

from __future__ import annotations

import base64
import html
from datetime import datetime

from rnnlab.compare.render import (
    NUMERIC_COLUMNS,
    caption,
    display_rows,
    printable,
    problem_lines,
)
from rnnlab.compare.select import Table

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: left; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.completed td.status { color: #1a7f37; } tr.diverged td.status,
tr.failed td.status { color: #c62828; } tr.pruned td.status { color: #b26a00; }
figure { display: inline-block; margin: 1em 1em 0 0; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #666; font-size: 13px; }
"""


def to_html(
    table: Table,
    images: dict[str, bytes],
    title: str = "rnnlab compare",
    notes: list[str] | None = None,
) -> str:
    """One self-contained page: the table, the incomplete/skipped folders, the plots."""
    headers, body = display_rows(table)
    status_at = table.columns.index("status")
    e = html.escape
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f'<p class="note">{e(caption(table))}. Generated '
        f"{datetime.now().isoformat(timespec='seconds')}.</p>",
        "<table>",
        "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr></thead>",
        "<tbody>",
    ]
    for cells in body:
        tds = []
        for key, text in zip(table.columns, cells, strict=True):
            cls = "num" if key in NUMERIC_COLUMNS else ("status" if key == "status" else "")
            tds.append(f'<td class="{cls}">{e(text)}</td>' if cls else f"<td>{e(text)}</td>")
        out.append(f'<tr class="{e(cells[status_at])}">' + "".join(tds) + "</tr>")
    out += ["</tbody></table>"]
    problems = [*problem_lines(table, limit=100), *map(printable, notes or [])]
    if problems:
        out += ['<ul class="note">', *(f"<li>{e(p)}</li>" for p in problems), "</ul>"]
    if images:
        out.append("<h2>Plots</h2>")
    for name, data in images.items():
        b64 = base64.b64encode(data).decode("ascii")
        out.append(
            f'<figure><img alt="{e(name)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{e(name)}</figcaption></figure>"
        )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
