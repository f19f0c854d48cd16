"""Which process a trial belongs to, and whether it is still alive.

The sweep process records itself as a trial's owner, the job as its job; a sweep resumed after
a crash uses this to tell a dead trial from one that is still running.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from rnnlab import slurm


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """Host, pid and start time of a process: enough to tell later whether it is still alive;
    for this process in a Slurm job, also the job id (so the sweeper can ask how it ended)."""
    identity: dict[str, Any] = {"host": socket.gethostname()}
    if pid is None:
        pid = os.getpid()
        if (job := slurm.job_id()) is not None:
            identity["slurm_job_id"] = job
    return {**identity, "pid": pid, "start": _start_time(pid)}


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
    fields = _stat(pid)
    if fields is not None and fields[0] in ("Z", "X"):
        return False  # dead, not yet reaped by its parent (kill -9 of a sweep: a zombie)
    # The pid may have been reused by an unrelated process since.
    start = identity.get("start")
    return start is None or fields is None or fields[19] == start


def _start_time(pid: int) -> str | None:
    fields = _stat(pid)
    return None if fields is None else fields[19]


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the parenthesised command name: state, ppid, ..., starttime
    (index 19); None where there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()
