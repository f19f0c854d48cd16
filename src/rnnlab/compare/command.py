"""The command: `rnnlab compare PATH...` (also `python -m rnnlab.compare PATH...`).

Parses the arguments, finds and reads the runs, prints the table, writes the exports.
matplotlib and optuna are imported only for --plot / --html.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from rnnlab import runs
from rnnlab.compare.fields import CompareError
from rnnlab.compare.render import print_table, printable, to_csv, to_json, to_markdown
from rnnlab.compare.rundirs import find_runs
from rnnlab.compare.select import Table, build_table

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


def _error(message: str) -> None:
    """One line like every other rnnlab error (keys from the folders read may hold anything)."""
    print(f"rnnlab: error: {printable(message, 4000)}", file=sys.stderr)


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
        # One line, instead of argparse's usage + message.
        _error(f"{message} (see rnnlab compare --help)")
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
        _error(str(e))
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
    exports = [
        ("csv", lambda: to_csv(table)),
        ("json", lambda: to_json(table)),
        ("markdown", lambda: to_markdown(table, base=args.markdown.parent)),
    ]
    for option, render in exports:
        target = getattr(args, option)
        if target:
            # Named as given: the error's own file is atomic_write's hidden temp file.
            with _writing(f"--{option} {target}"):
                runs.atomic_write(target, render())
    if args.plot or args.html:
        try:
            _plots(table, args.plot, args.html, args.quiet)
        except OSError as e:
            raise CompareError(f"cannot write {e.filename or ''}: {e.strerror or e}") from None
    if not found.runs and not found.incomplete:
        _error("no run folders found under " + " ".join(map(str, args.paths)))
        return 1
    return 0


@contextlib.contextmanager
def _writing(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as e:
        raise CompareError(f"{what}: cannot write it: {e.strerror or e}") from None


def _plots(table: Table, plot_dir: Path | None, html_file: Path | None, quiet: bool) -> None:
    import rnnlab.compare.page as page  # matplotlib, optuna: only when asked
    import rnnlab.compare.plots as plots

    images, notes = plots.make_plots(table)
    if plot_dir:
        plots.write_plots(images, plot_dir)
    if html_file:
        runs.atomic_write(html_file, page.to_html(table, images, notes=notes))
    for note in notes:  # under the table
        print(f"note: {printable(note, 1000)}", file=sys.stderr if quiet else sys.stdout)


def main(argv: list[str] | None = None) -> int:
    """`python -m rnnlab.compare PATH...`: the same command without the `rnnlab` wrapper."""
    parser = argparse.ArgumentParser(
        prog="rnnlab compare", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    configure_parser(parser)
    return run_command(parser.parse_args(argv))
