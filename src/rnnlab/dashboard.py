"""`rnnlab dashboard [STORAGE]`: optuna-dashboard on a sweep's study, on the loopback address.

STORAGE is a storage URL (`sqlite:///...`, `postgresql://...`, `journal:///...`), a study file
(a SQLite database or an optuna journal file) or a folder of them; by default the folder
`outputs/optuna/` where sweeps keep one SQLite file per study. optuna-dashboard serves one
storage, so of several files in a folder the newest is served and the others are named.

The server is optuna-dashboard's WSGI app (its public `wsgi()`) in the standard library's
threaded WSGI server, bound before the address is printed, so the printed port is the real
one even when it was picked by the system. optuna-dashboard comes with the `dashboard` extra
(`pip install -e '.[dashboard]'`); nothing here imports it until the command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import signal
import socket
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, NoReturn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from rnnlab import secrets
from rnnlab.storage import JOURNAL_SCHEME, journal_path, older_schema_problem, open_storage

DEFAULT_DIR = Path("outputs") / "optuna"
DEFAULT_PORT = 8080
SQLITE_MAGIC = b"SQLite format 3\x00"
STUDY_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".log", ".journal")


class DashboardError(Exception):
    """A storage or option the dashboard cannot serve; the message is one line."""


def add_parser(subparsers: Any) -> Callable[[argparse.Namespace], int]:
    """Register `dashboard` on the `rnnlab` command; returns the function that runs it."""
    parser = subparsers.add_parser(
        "dashboard",
        help="serve optuna-dashboard on a sweep's study",
        description=__doc__.split("\n\n")[1],
    )

    def error(message: str) -> NoReturn:
        print(f"rnnlab: error: {message} (see rnnlab dashboard --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]
    parser.add_argument(
        "storage",
        nargs="?",
        metavar="STORAGE",
        help=f"storage URL, study file or folder of them (default: {DEFAULT_DIR}/)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port (default: {DEFAULT_PORT}, or a free one if it is taken; 0: a free one)",
    )
    return run_command


def run_command(args: argparse.Namespace) -> int:
    """Run `rnnlab dashboard` for parsed `args`; returns the exit code."""
    try:
        try:
            from optuna_dashboard import wsgi
        except ImportError:
            raise DashboardError(
                "rnnlab dashboard needs optuna-dashboard: pip install -e '.[dashboard]'"
            ) from None
        url, note = resolve(args.storage)
        storage = open_dashboard_storage(url)
        server = _bind(args.host, args.port)
    except DashboardError as e:
        # Every message may quote STORAGE, and a path or URL may carry a password in its query.
        print(f"rnnlab: error: {secrets.mask_url(str(e))}", file=sys.stderr)
        return 2
    server.set_app(wsgi(storage))
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in str(host) else host
    if note:
        print(note, flush=True)
    print(f"serving {secrets.mask_url(url)}", flush=True)
    print(f"optuna-dashboard: http://{shown}:{port}/dashboard/  (Ctrl-C to stop)", flush=True)
    # A plain `kill` stops it as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def resolve(arg: str | None) -> tuple[str, str | None]:
    """The storage URL to serve for STORAGE `arg`, and a note when it was picked among several."""
    if arg is not None and "://" in arg:
        return arg, None
    path = Path(arg) if arg is not None else DEFAULT_DIR
    if not path.exists():
        if arg is None:
            raise DashboardError(
                f"{DEFAULT_DIR}/: no such folder (no sweep has run here); give a storage URL, "
                "a study file or a folder"
            )
        raise DashboardError(f"{arg}: no such file or folder")
    if path.is_file():
        return _file_url(path), None
    studies = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix in STUDY_SUFFIXES),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    if not studies:
        raise DashboardError(
            f"{path}: no study files in it (*{', *'.join(STUDY_SUFFIXES)}); give a storage URL "
            "or a study file"
        )
    note = None
    if len(studies) > 1:
        others = ", ".join(p.name for p in studies[1:])
        note = (
            f"{len(studies)} study files in {path}; serving the newest, {studies[0].name} "
            f"(others: {others}; name one to serve it)"
        )
    return _file_url(studies[0]), note


def _file_url(path: Path) -> str:
    """sqlite:/// or journal:/// for a study file, by its content rather than its name."""
    path = path.resolve()
    with path.open("rb") as f:
        head = f.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        return f"sqlite:///{path}"
    if head[:1] in (b"", b"{"):
        return f"{JOURNAL_SCHEME}{path}"
    raise DashboardError(f"{path}: not an optuna study (neither a SQLite database nor a journal)")


def open_dashboard_storage(url: str) -> Any:
    """Open `url` for reading without ever creating or changing a study file; one-line errors."""
    import optuna

    masked = secrets.mask_url(url)
    try:
        path = journal_path(url)
    except ValueError as e:
        raise DashboardError(str(e)) from None
    if path is not None and not path.is_file():
        raise DashboardError(f"{path}: no such journal file")
    if url.startswith("sqlite:///"):
        file = Path(url[len("sqlite:///") :])
        if not file.is_file():
            raise DashboardError(f"{file}: no such SQLite file")
        _check_optuna_sqlite(file)
    try:
        storage = open_storage(url)
        studies = optuna.get_all_study_summaries(storage, include_best_trial=False)
    except DashboardError:
        raise
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DashboardError(f"{masked}: {secrets.mask_url(first)}") from None
    if not studies:
        raise DashboardError(f"{masked}: no optuna study in it")
    return storage


def _check_optuna_sqlite(file: Path) -> None:
    # optuna's RDBStorage creates its tables in any database it opens, even one of an older
    # schema that it then refuses: look first, read-only.
    try:
        with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as e:
        raise DashboardError(f"{file}: not a readable SQLite database ({e})") from None
    if "studies" not in tables:
        raise DashboardError(f"{file}: a SQLite database, but not an optuna study (no studies)")
    problem = older_schema_problem(file)
    if problem is not None:
        raise DashboardError(problem)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # the page polls; a slow request must not hold the others


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _bind(host: str, port: int | None) -> WSGIServer:
    try:
        family, *_, sockaddr = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0]
        loopback = ipaddress.ip_address(sockaddr[0]).is_loopback
    except (OSError, ValueError):
        raise DashboardError(f"--host {host}: not an address of this machine") from None
    if not loopback:
        print(
            f"rnnlab: warning: --host {host} is not a loopback address: anyone who can reach "
            "it can read, change and delete the studies (optuna-dashboard has no login)",
            file=sys.stderr,
        )
    server_class = type("_Server", (_Server,), {"address_family": family})
    candidates = [DEFAULT_PORT, 0] if port is None else [port]
    for candidate in candidates:
        try:
            return make_server(
                host,
                candidate,
                None,  # type: ignore[arg-type]  # the app is set once the port is known
                server_class=server_class,
                handler_class=_QuietHandler,
            )
        except OSError as e:
            if candidate == candidates[-1]:
                raise DashboardError(f"--port {candidate}: cannot listen on it ({e})") from None
    raise AssertionError("unreachable")
