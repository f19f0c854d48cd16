"""`rnnlab dashboard`: optuna-dashboard on a real sweep's study, read through its JSON API and,
where Chromium is installed, rendered by a headless browser.

The server runs as the user starts it (`rnnlab dashboard`, here `python -m rnnlab.cli`) from
the folder a sweep ran in, on a port the system picks (`--port 0`) and on loopback only.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from rnnlab import cli
from rnnlab.dashboard import DEFAULT_DIR
from sweeping import sweep_env

REPO = Path(__file__).resolve().parents[1]
OLD_STUDY_SQL = REPO / "tests" / "fixtures" / "optuna-2.10-study.sql"  # written by optuna 2.10
STATE_NAMES = {
    optuna.trial.TrialState.COMPLETE: "Complete",
    optuna.trial.TrialState.PRUNED: "Pruned",
    optuna.trial.TrialState.FAIL: "Fail",
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _env() -> dict[str, str]:
    return sweep_env()


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder where a real 4-trial sweep with the median pruner ran (2 epochs each, so every
    trial has intermediate values); its study is outputs/optuna/d.db."""
    root = tmp_path_factory.mktemp("swept")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            f"paths.data_dir={tmp_path_factory.mktemp('data')}",
            "data=mnist_sample",
            "data.val_size=400",
            "data.test_size=4100",
            "model=rnn",
            "model.hidden_size=8",
            "data.batch_size=64",
            "trainer.epochs=2",
            "trainer.save_checkpoints=false",
            "trainer.progress=false",
            "hydra/sweeper=rnnlab_optuna",
            "hydra/sweeper/pruner=median",
            "hydra.sweeper.study_name=d",
            "hydra.sweeper.n_trials=4",
            "optimizer.lr=interval(0.0001,0.05)",
        ],
        cwd=root,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (root / DEFAULT_DIR / "d.db").is_file()
    return root


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, lines: list[str]) -> None:
        self.proc, self.url, self.lines = proc, url, lines

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())


def _serve(cwd: Path, *args: str) -> Iterator[Server]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab.cli", "dashboard", "--port", "0", *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            if not line:
                break
            lines.append(line)
            m = re.search(r"optuna-dashboard: (http://127\.0\.0\.1:\d+)/dashboard/", line)
            if m:
                yield Server(proc, m.group(1), lines)
                break
        else:
            raise AssertionError("no address printed")
        assert lines and "optuna-dashboard: " in lines[-1], "".join(lines)
    finally:
        proc.terminate()
        rc = proc.wait(timeout=30)
    assert rc == 0, "".join(lines)


@pytest.fixture(scope="module")
def server(swept: Path) -> Iterator[Server]:
    yield from _serve(swept)


def _study_id(server: Server, name: str) -> int:
    studies = server.get("/api/studies")["study_summaries"]
    (study,) = [s for s in studies if s["study_name"] == name]
    return int(study["study_id"])


@pytest.mark.slow
def test_dashboard_serves_the_sweeps_study_with_trials_and_pruning_curves(
    swept: Path, server: Server
) -> None:
    assert f"serving sqlite:///{(swept / DEFAULT_DIR / 'd.db').resolve()}" in "".join(server.lines)
    expected = optuna.load_study(study_name="d", storage=f"sqlite:///{swept}/{DEFAULT_DIR}/d.db")
    detail = server.get(f"/api/studies/{_study_id(server, 'd')}")
    assert detail["name"] == "d" and detail["directions"] == ["maximize"]
    got = {t["number"]: t for t in detail["trials"]}
    assert sorted(got) == [0, 1, 2, 3]
    for t in expected.get_trials():
        shown = got[t.number]
        assert shown["state"] == STATE_NAMES[t.state]
        curve = {int(v["step"]): v["value"] for v in shown["intermediate_values"]}
        assert curve == t.intermediate_values and len(curve) >= 1
        assert {p["name"] for p in shown["params"]} == {"optimizer.lr"}
    assert detail["has_intermediate_values"] is True


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_dashboard_page_renders_the_trials_in_a_headless_browser(
    server: Server, tmp_path: Path
) -> None:
    page = f"{server.url}/dashboard/studies/{_study_id(server, 'd')}"
    browser = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,900",
        "--virtual-time-budget=10000",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run([*browser, f"--screenshot={shot}", page], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    dom = subprocess.run(
        [*browser, "--dump-dom", f"{page}/trials"], capture_output=True, text=True, timeout=120
    ).stdout
    # The trials list: one entry per trial, rendered by the page's script from the JSON API.
    assert {int(n) for n in re.findall(r"Trial (\d+)", dom)} == {0, 1, 2, 3}
    assert "d (id=" in dom


@pytest.mark.slow
def test_dashboard_serves_a_journal_file(tmp_path: Path) -> None:
    log = tmp_path / "study.log"
    study = optuna.create_study(
        study_name="j",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(log))
        ),
    )
    trial = study.ask()
    trial.report(0.25, 1)
    study.tell(trial, 0.5)
    for server in _serve(tmp_path, str(log)):
        detail = server.get(f"/api/studies/{_study_id(server, 'j')}")
        (t,) = detail["trials"]
        assert t["intermediate_values"] == [{"step": 1, "value": 0.25}]


# --------------------------------------------------------------------------- one-line errors


def _error(capsys: pytest.CaptureFixture, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dashboard", *argv])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    return err


def test_dashboard_refuses_what_is_not_a_study_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert "outputs/optuna/: no such folder" in _error(capsys)
    (tmp_path / DEFAULT_DIR).mkdir(parents=True)
    assert "no study files in it" in _error(capsys)

    text = tmp_path / "notes.txt"
    text.write_text("not a study\n")
    assert f"{text}: not an optuna study" in _error(capsys, str(text))
    assert "nothing.db: no such file or folder" in _error(capsys, "nothing.db")

    other = tmp_path / "other.db"  # a SQLite database of something else: left untouched
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    before = other.read_bytes()
    assert "a SQLite database, but not an optuna study" in _error(capsys, str(other))
    assert other.read_bytes() == before

    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert "no optuna study in it" in _error(capsys, str(empty))
    assert "needs an absolute path" in _error(capsys, "journal://rel.log")
    assert not list(tmp_path.glob("*.lock"))


def test_dashboard_without_the_package_names_the_extra(tmp_path: Path) -> None:
    # As if optuna-dashboard were not installed: Python raises ImportError for a None entry.
    code = (
        "import sys; sys.modules['optuna_dashboard'] = None; "
        "from rnnlab import cli; cli.main(['dashboard'])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "rnnlab: error: rnnlab dashboard needs optuna-dashboard: pip install -e '.[dashboard]'\n"
    )


def test_dashboard_refuses_a_study_of_an_older_optuna_without_touching_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.executescript(OLD_STUDY_SQL.read_text())
    before = old.read_bytes()
    err = _error(capsys, str(old))
    assert f"{old}: the study file has the schema of an older optuna" in err
    assert f"optuna storage upgrade --storage sqlite:///{old}" in err
    assert old.read_bytes() == before


def test_default_port_taken_falls_back_to_a_free_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnlab import dashboard

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        monkeypatch.setattr(dashboard, "DEFAULT_PORT", busy)
        server = dashboard._bind("127.0.0.1", None)
        try:
            assert server.server_address[0] == "127.0.0.1"
            assert server.server_address[1] not in (busy, 0)
        finally:
            server.server_close()
        with pytest.raises(dashboard.DashboardError, match=rf"^--port {busy}: cannot listen"):
            dashboard._bind("127.0.0.1", busy)


def test_unreachable_database_fails_in_one_line_without_its_password(
    capsys: pytest.CaptureFixture,
) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    err = _error(capsys, f"postgresql://rnn:s3cret@127.0.0.1:{port}/db")
    assert f"postgresql://rnn:***@127.0.0.1:{port}/db: " in err
    assert "s3cret" not in err


@pytest.mark.parametrize(
    "storage",
    [
        "sqlite:///{tmp}/x.db?password=s3cret",
        "journal:///{tmp}/x.log?password=s3cret",
        "{tmp}/nothing?password=s3cret",
    ],
)
def test_missing_study_file_fails_without_the_password_in_its_query(
    storage: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    err = _error(capsys, storage.format(tmp=tmp_path))
    assert str(tmp_path) in err
    assert "s3cret" not in err
