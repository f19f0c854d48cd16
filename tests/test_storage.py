"""rnnlab.storage on real storages: a journal file and a SQLite database, opened by URL.

Each test opens its storage by URL as the sweeper and the jobs do, records heartbeats through
the public API and ages one beat by writing it as an older process would have (journal) or
by moving the database's own heartbeat row back in time (SQLite), then asks which trials are
stale. The SQLite case also pins the private optuna method the module relies on.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage, RDBStorage
from optuna.trial import TrialState

from rnnlab import storage as st

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _journal_url(tmp_path: Path) -> str:
    return f"journal://{tmp_path}/shared/study.log"


def test_journal_url_opens_a_journal_storage_shared_between_processes(tmp_path: Path) -> None:
    url = _journal_url(tmp_path)
    storage = st.open_storage(url)
    assert isinstance(storage, JournalStorage)
    assert st.open_storage(url) is storage  # one per URL and process
    assert (tmp_path / "shared" / "study.log").is_file()  # folder created
    study = optuna.create_study(study_name="j", storage=storage, direction="maximize")
    trial = study.ask()
    trial.report(0.5, 1)
    study.tell(trial, 0.7)

    # Another process (a fresh storage object on the same file) sees all of it.
    other = st._open_journal(url, tmp_path / "shared" / "study.log")
    (t,) = optuna.load_study(study_name="j", storage=other).get_trials()
    assert (t.state, t.value, t.intermediate_values) == (TrialState.COMPLETE, 0.7, {1: 0.5})


def test_journal_url_must_be_absolute_and_name_a_journal(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^journal://study.log: a journal storage needs an abs"):
        st.open_storage("journal://study.log")
    db = tmp_path / "study.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{db}")
    before = db.read_bytes()
    with pytest.raises(ValueError, match=r"study.db: not an optuna journal file"):
        st.open_storage(f"journal://{db}")
    assert db.read_bytes() == before  # nothing written to it
    assert st.journal_path("sqlite:///x.db") is None


@pytest.mark.parametrize("tail", ["study.log?password=s3cret", "study.log#s3cret"])
def test_journal_url_with_a_query_is_refused_masked(tmp_path: Path, tail: str) -> None:
    """It would otherwise open a journal file named after the secret."""
    with pytest.raises(ValueError, match="no query string") as e:
        st.open_storage(f"journal://{tmp_path}/{tail}")
    assert "s3cret" not in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_journal_heartbeat_recorded_and_stale_detection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = st.open_storage(_journal_url(tmp_path))
    study = optuna.create_study(study_name="h", storage=storage)
    beating, aged, silent, finished, ahead = (study.ask() for _ in range(5))

    hb = st.Heartbeat(storage, interval=0.05)
    before = time.time()
    for t in (beating, finished):
        hb.add(t._trial_id)
    attrs = storage.get_trial(beating._trial_id).system_attrs
    assert before <= attrs[st.HEARTBEAT_ATTR] <= time.time()
    assert st.HEARTBEAT_ATTR not in storage.get_trial(beating._trial_id).user_attrs

    # The thread keeps beating: the recorded time moves on.
    first = attrs[st.HEARTBEAT_ATTR]
    deadline = time.monotonic() + 30
    while storage.get_trial(beating._trial_id).system_attrs[st.HEARTBEAT_ATTR] == first:
        assert time.monotonic() < deadline, "no second heartbeat"
        time.sleep(0.05)

    # A trial that finishes while in the heartbeat: later beats skip it, without a warning.
    with caplog.at_level(logging.WARNING, logger="rnnlab.storage"):
        study.tell(finished, 1.0)
        time.sleep(0.3)
    assert not caplog.records
    hb.stop()

    # Beats written by processes elsewhere: one long ago, one from a clock ahead of ours.
    storage.set_trial_system_attr(aged._trial_id, st.HEARTBEAT_ATTR, time.time() - 700)
    storage.set_trial_system_attr(ahead._trial_id, st.HEARTBEAT_ATTR, time.time() + 300)
    assert st.stale_trial_ids(storage, study._study_id) == {aged._trial_id}
    # Clock skew: the beat from the future counts as "now", so it goes stale STALE_AFTER_S
    # after the reader's clock passes it, never earlier.
    later = time.time() + 300 + st.STALE_AFTER_S + 1
    assert ahead._trial_id in st._journal_stale_trial_ids(storage, study._study_id, later)
    assert silent._trial_id not in st._journal_stale_trial_ids(storage, study._study_id, later)
    # Once failed it is no longer RUNNING, so no longer stale.
    study.tell(aged, state=TrialState.FAIL)
    assert st.stale_trial_ids(storage, study._study_id) == set()


# optuna warns on study.ask() that heartbeats are meant for Study.optimize; the sweeper asks.
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_sqlite_heartbeat_recorded_and_stale_detection(tmp_path: Path) -> None:
    """Also the seam to optuna's private RDBStorage._get_stale_trial_ids: if optuna renames it
    or changes what it returns, this fails."""
    db = tmp_path / "optuna" / "s.db"
    storage = st.open_storage(f"sqlite:///{db}")
    assert isinstance(storage, RDBStorage)
    assert (storage.heartbeat_interval, storage.grace_period) == (
        st.HEARTBEAT_S,
        st.STALE_AFTER_S,
    )
    study = optuna.create_study(study_name="s", storage=storage)
    beating, aged, silent = study.ask(), study.ask(), study.ask()
    hb = st.Heartbeat(storage)
    hb.add(beating._trial_id)
    hb.add(aged._trial_id)
    hb.stop()
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT trial_id, heartbeat FROM trial_heartbeats").fetchall())
        assert set(rows) == {beating._trial_id, aged._trial_id}
        conn.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime('now', ?) WHERE trial_id = ?",
            (f"-{st.STALE_AFTER_S + 60} seconds", aged._trial_id),
        )
    assert st.stale_trial_ids(storage, study._study_id) == {aged._trial_id}
    st.record_heartbeat(storage, aged._trial_id)  # it beats again: no longer stale
    assert st.stale_trial_ids(storage, study._study_id) == set()
    assert silent._trial_id not in st.stale_trial_ids(storage, study._study_id)


def test_heartbeat_warns_once_when_the_storage_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = st.open_storage(_journal_url(tmp_path))
    hb = st.Heartbeat(storage, interval=0.02)
    with caplog.at_level(logging.WARNING, logger="rnnlab.storage"):
        hb.add(12345)  # no such trial: every beat fails
        time.sleep(0.2)
    hb.stop()
    assert len(caplog.records) == 1
    assert "trial id 12345" in caplog.records[0].getMessage()
    assert all(t.name != "heartbeat" or t.daemon for t in threading.enumerate())
