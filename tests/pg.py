"""A throwaway PostgreSQL server on loopback, from the Debian binaries, for tests.

`postgres_server()` starts one with password authentication (scram-sha-256) and a superuser
`rnnlab`; `Server.create_role` adds login roles with any password. Tests skip where PostgreSQL
or psycopg2 is not installed.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "rnnlab"
SUPERUSER_PASSWORD = "pg-super-7d1e"
HOST = "127.0.0.1"


@dataclass
class Server:
    port: int

    def url(self, user: str = SUPERUSER, password: str = SUPERUSER_PASSWORD) -> str:
        return f"postgresql://{user}:{password}@{HOST}:{self.port}/postgres"

    def create_role(self, name: str, password: str) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host=HOST,
            port=self.port,
            user=SUPERUSER,
            password=SUPERUSER_PASSWORD,
            dbname="postgres",
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                # Each role gets its own database: optuna's tables are per database.
                cur.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD %s', (password,))
                cur.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
        finally:
            conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[Server]:
    pytest.importorskip("psycopg2")
    bindir = next(
        (
            p
            for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
            if (p / "initdb").exists()
        ),
        None,
    )
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    # Not under pytest's tmp dir: that is private to this user, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="rnnlab-pg-"))
    root.chmod(0o755)
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    pwfile = root / "pw"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    if as_user:
        shutil.chown(pwfile, "postgres")
    port = free_port()
    data = root / "data"
    init = subprocess.run(
        [
            *as_user,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if init.returncode != 0:
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    subprocess.run(
        [
            *as_user,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(root / "log"),
            "-o",
            f"-p {port} -k {root} -c listen_addresses={HOST}",
            "start",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    try:
        yield Server(port)
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
