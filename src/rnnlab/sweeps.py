"""Which process a trial belongs to, and whether it is still alive.

The sweep process records itself as a trial's owner, the job as its job; a sweep resumed after
a crash uses this to tell a dead trial from one that is still running.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """Host, pid and start time of a process: enough to tell later whether it is still alive."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "start": _start_time(pid)}


def process_alive(identity: dict[str, Any] | None) -> bool | None:
    """True/False for a process on this host; None when it ran elsewhere (cannot tell)."""
    if not identity or identity.get("host") != socket.gethostname():
        return None
    pid = identity.get("pid")
    if not isinstance(pid, int):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # The pid may have been reused by an unrelated process since.
    start = identity.get("start")
    return start is None or _start_time(pid) in (None, start)


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime) counts from after the parenthesised command name.
    return stat.rsplit(")", 1)[1].split()[19]
