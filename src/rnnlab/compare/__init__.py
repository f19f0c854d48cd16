"""`rnnlab compare PATH...`: which settings won, by how much, and by more than seed noise?

Reads run folders (see rnnlab.runs) found anywhere under the given paths and prints one
table: the config keys that differ across the selected runs, then the outcome of each run.
Nothing under PATH is ever written. Folders that cannot be compared (no summary.json yet,
a half-written or unknown-schema summary, an interrupted run, a folder that is not a run,
a file that is not a regular file of sane size) are listed below the table, one line each.

One concern per module, in import order:

    fields    the columns, key aliases and value helpers shared by all
    files     reading untrusted files: regular files of sane size, bounded JSON
    v1        the config of schema_version 1 folders from .hydra/ (PyYAML's C loader)
    rundirs   finding run folders and reading each into a Run
    select    --where, the differing keys, grouping over seeds, sorting: a Table
    render    cell text, the console table, Markdown / CSV / JSON
    trials    Optuna sweeps' trials and parameter importances
    plots     the PNG plots (matplotlib)
    page      the HTML page
    command   the argument parser and the command

For a table the package imports only the standard library and rnnlab.runs (v1 folders add
PyYAML); matplotlib and optuna load only for --plot / --html.
"""

from rnnlab.compare.command import add_parser, configure_parser, main, run_command
from rnnlab.compare.fields import CompareError
from rnnlab.compare.render import (
    caption,
    display_rows,
    print_table,
    render_text,
    to_csv,
    to_json,
    to_markdown,
)
from rnnlab.compare.rundirs import Found, Run, find_runs, read_run
from rnnlab.compare.select import Table, build_table, differing_keys

__all__ = [
    "CompareError",
    "Found",
    "Run",
    "Table",
    "add_parser",
    "build_table",
    "caption",
    "configure_parser",
    "differing_keys",
    "display_rows",
    "find_runs",
    "main",
    "print_table",
    "read_run",
    "render_text",
    "run_command",
    "to_csv",
    "to_json",
    "to_markdown",
]
