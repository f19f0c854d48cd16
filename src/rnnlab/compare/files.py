"""Reading files out of folders we do not trust: only regular files of sane size.

`rnnlab compare` walks whatever it is pointed at (`rnnlab compare /` included). A named pipe
called summary.json would block a plain open() forever, a symlink to /dev/zero would be read
until memory runs out; here every file is checked (stat, then fstat of the opened file,
opened non-blocking) before a byte is read, and read up to a size cap. Nothing is written.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any

# Far above any summary.json or Hydra config (a few KiB) or metrics.csv (100 B per epoch).
MAX_BYTES = 16 * 1024 * 1024
# Deeper than any config rnnlab writes (4 levels); deeper JSON or YAML is refused, so that
# nothing downstream recurses without bound.
MAX_DEPTH = 32

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class Unreadable(Exception):
    """A file that is there but is not read (not a regular file, too big, an I/O error)."""


class TooDeep(ValueError):
    """JSON or YAML nested deeper than MAX_DEPTH: refused before anything recurses on it."""


def _check(st: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
        raise Unreadable(f"is {kind}; skipped")
    if st.st_size > limit:
        raise Unreadable(f"is {st.st_size:,} bytes (more than {limit:,}); skipped")


def read_bytes(path: str | os.PathLike[str], limit: int = MAX_BYTES) -> bytes:
    """The contents of the regular file `path`, at most `limit` bytes.

    Raises FileNotFoundError when it does not exist, Unreadable for anything else.
    """
    try:
        _check(os.stat(path), limit)  # before open(): opening some devices has effects
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise Unreadable(f"cannot be read: {e.strerror or e}") from None
    try:
        _check(os.fstat(fd), limit)  # it may have been swapped since the stat
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise Unreadable(f"cannot be read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if size > limit:  # it grew while being read
        raise Unreadable(f"is more than {limit:,} bytes; skipped")
    return b"".join(chunks)


def read_text(path: str | os.PathLike[str], limit: int = MAX_BYTES) -> str:
    """read_bytes, decoded as UTF-8 (Unreadable if it is not)."""
    try:
        return read_bytes(path, limit).decode("utf-8")
    except UnicodeDecodeError as e:
        raise Unreadable(f"is not UTF-8 text ({e.reason} at byte {e.start})") from None


def load_json(data: bytes | str) -> Any:
    """json.loads, with depth checked; ValueError for invalid JSON, TooDeep (a ValueError)
    for JSON nested too deep.

    NaN and Infinity, which Python's json writes and reads, are accepted as floats.
    """
    try:
        doc = json.loads(data)
    except RecursionError:
        raise TooDeep(f"is nested deeper than {MAX_DEPTH} levels; refused") from None
    check_depth(doc)
    return doc


def check_depth(doc: Any, limit: int = MAX_DEPTH) -> None:
    """TooDeep if lists/dicts in `doc` nest deeper than `limit` (iterative: no recursion)."""
    stack = [(doc, 0)] if isinstance(doc, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise TooDeep(f"is nested deeper than {limit} levels; refused")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def plain(value: Any) -> Any:
    """`value` as JSON-like data: YAML's dates, bytes, sets... become their text."""
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)


def as_choice(value: Any) -> str | None:
    """A config-group choice as text (None for null): an odd value is shown, never hashed raw."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(plain(value), default=str)


def flatten(tree: dict[Any, Any]) -> dict[str, Any]:
    """{'a': {'b': 1}, 'c': [1]} -> {'a.b': 1, 'c': [1]}: dotted keys; lists stay values.

    Iterative: `tree` may come from anywhere (its depth is checked where it is read).
    """
    out: dict[str, Any] = {}
    # Depth first with a stack of iterators: the keys keep the file's order.
    stack: list[tuple[str, Any]] = [("", iter(tree.items()))]
    while stack:
        prefix, items = stack[-1]
        for key, value in items:
            dotted = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                stack.append((dotted + ".", iter(value.items())))
                break
            out[dotted] = value
        else:
            stack.pop()
    return out


def one_line(e: BaseException) -> str:
    """An exception as one short line: 'Type: first line of its message'."""
    if isinstance(e, Unreadable | TooDeep):
        return str(e)
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}".rstrip(": ")


def count_lines(path: str | os.PathLike[str]) -> int:
    """Lines in a text file (0 when it cannot be read): epochs logged by a crashed run."""
    try:
        return read_bytes(path).count(b"\n")
    except (OSError, Unreadable):
        return 0
