"""The Optuna storage a sweep and its trials share, and the trials' heartbeats in it.

Two kinds of storage, one API (`open_storage`, `record_heartbeat`, `Heartbeat`,
`stale_trial_ids`), so the sweeper and the jobs never ask which one they have:

- a database URL (`sqlite:///...`, `postgresql://...`): optuna's RDBStorage, whose own heartbeat
  table records each beat with the database server's clock;
- `journal:///abs/path/study.log`: optuna's JournalStorage on an append-only file, for several
  machines sharing a filesystem (NFS, Lustre, ...) without a database server. The path after
  `journal://` must be absolute (hence three slashes): the sweep and its jobs, possibly on other
  nodes with other working directories, must all open the same file. JournalStorage has no
  heartbeat support (optuna 4 implements BaseHeartbeat for RDBStorage only), so a beat is a
  trial system attribute HEARTBEAT_ATTR holding the writer's wall-clock time (see
  `_journal_stale_trial_ids` for how clock skew between hosts is handled).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rnnlab.secrets import mask_url

log = logging.getLogger(__name__)

# Seconds a SQLite connection waits for another process's write lock before it gives up:
# parallel trials and cooperating sweeps all write to the same file.
SQLITE_TIMEOUT_S = 120
# A running trial's heartbeat is recorded in the storage this often, by its sweep process while
# the trial waits or runs and by the job while it trains. A trial left RUNNING whose processes
# are on another host counts as abandoned once its last beat is older than STALE_AFTER_S; on
# this host the sweeper checks the processes themselves.
HEARTBEAT_S = 30
STALE_AFTER_S = 600

JOURNAL_SCHEME = "journal://"
# The journal storage's heartbeat: a trial system attribute (not a user attribute, so it stays
# out of trials.csv and the user attributes shown by optuna-dashboard), seconds since the epoch.
HEARTBEAT_ATTR = "rnnlab:heartbeat"


def journal_path(url: str) -> Path | None:
    """The journal file a `journal:///abs/path` URL names; None for any other URL."""
    if not url.startswith(JOURNAL_SCHEME):
        return None
    path = url[len(JOURNAL_SCHEME) :]
    if "?" in path or "#" in path:
        # Taken as part of the file name, a `?password=...` would name a file after the secret.
        file = path.partition("?")[0].partition("#")[0]  # what follows may be a secret
        raise ValueError(
            f"{JOURNAL_SCHEME}{file}?...: a journal storage is a file path, with no query "
            "string or fragment (`?`, `#`); a journal file has no password"
        )
    if not path.startswith("/"):
        raise ValueError(
            f"{url}: a journal storage needs an absolute path, as in "
            "journal:///shared/fs/study.log (three slashes)"
        )
    return Path(path)


@functools.lru_cache(maxsize=8)
def open_storage(url: str) -> Any:
    """The optuna storage for `url` (see the module docstring); its folder is created.

    One per URL and process: trials run in the sweep's process by the basic launcher would
    otherwise each leave a connection pool behind (or replay the journal again).
    """
    path = journal_path(url)
    if path is not None:
        return _open_journal(url, path)
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        file = url[len("sqlite:///") :]
        if file and file != ":memory:":
            Path(file).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        # heartbeat_interval is "experimental" since optuna 2.x; it warns on every open.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=STALE_AFTER_S,
        )


def _open_journal(url: str, path: Path) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path.parent.mkdir(parents=True, exist_ok=True)
    # The lock is a separate file created with open(O_CREAT | O_EXCL), which is atomic on local
    # filesystems and on NFSv3+ (every NFS in use today), Lustre, GPFS and SMB mounts, and needs
    # no symlinks (optuna's default JournalFileSymlinkLock does, which some shared mounts and
    # Windows refuse). A lock left by a killed writer is broken after 30 s without change.
    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    try:
        return JournalStorage(backend)
    except (ValueError, KeyError, TypeError) as e:  # a line that is not JSON or not a log
        raise ValueError(
            f"{url}: not an optuna journal file ({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from None


def is_journal(storage: Any) -> bool:
    from optuna.storages import JournalStorage

    return isinstance(storage, JournalStorage)


def record_heartbeat(storage: Any, trial_id: int) -> None:
    """Record that trial `trial_id` is alive now; a trial already finished is left alone."""
    if not is_journal(storage):
        storage.record_heartbeat(trial_id)
        return
    from optuna.exceptions import UpdateFinishedTrialError

    if storage.get_trial(trial_id).state.is_finished():
        return
    # It may be finished by another process between the check and the write.
    with contextlib.suppress(UpdateFinishedTrialError):
        storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())


def stale_trial_ids(storage: Any, study_id: int) -> set[int]:
    """RUNNING trials of the study whose last heartbeat is older than STALE_AFTER_S (trials that
    never recorded one, e.g. from before heartbeats, are not included)."""
    if is_journal(storage):
        return _journal_stale_trial_ids(storage, study_id, time.time())
    # optuna has no public way to find stale trials without failing them (fail_stale_trials),
    # and the sweeper records failed trials itself (reason, run dir, interrupted summary);
    # tests/test_storage.py checks that this private method still answers as we expect.
    return set(storage._get_stale_trial_ids(study_id))


def _journal_stale_trial_ids(storage: Any, study_id: int, now: float) -> set[int]:
    """Clock skew: a beat carries its writer's wall clock and is compared with the reader's.
    A writer behind the reader by d makes its trial look d seconds older, so a live trial is
    never taken for stale unless clocks disagree by more than STALE_AFTER_S - HEARTBEAT_S
    (9.5 minutes; NTP keeps cluster nodes within milliseconds). A writer ahead makes a dead
    trial look younger: its beat, even one from the future, counts as at most `now`, so
    recovery comes late by the skew, never early."""
    from optuna.trial import TrialState

    running: Iterable[Any] = storage.get_all_trials(
        study_id, deepcopy=False, states=(TrialState.RUNNING,)
    )
    stale = set()
    for t in running:
        beat = t.system_attrs.get(HEARTBEAT_ATTR)
        if isinstance(beat, int | float) and now - min(beat, now) > STALE_AFTER_S:
            stale.add(t._trial_id)  # the storage id: FrozenTrial has no public accessor
    return stale


class Heartbeat:
    """Records a heartbeat for each trial in it every HEARTBEAT_S seconds, from a daemon thread.

    Never fails its owner: if the storage cannot be reached it says so once and keeps trying.
    """

    def __init__(self, storage: Any, interval: float = HEARTBEAT_S) -> None:
        self._storage = storage
        self._interval = interval
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def add(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
                self._thread.start()
        self._beat(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def stop(self) -> None:
        self._stopped.set()

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            with self._lock:
                trial_ids = sorted(self._trial_ids)
            for trial_id in trial_ids:
                self._beat(trial_id)

    def _beat(self, trial_id: int) -> None:
        try:
            record_heartbeat(self._storage, trial_id)
        except Exception as e:
            if not self._warned:
                self._warned = True
                log.warning(
                    "could not record the heartbeat of trial id %d (%s); will keep trying",
                    trial_id,
                    mask_url(f"{type(e).__name__}: {e}"),
                )


def older_schema_problem(file: Path) -> str | None:
    """What is wrong with SQLite study file `file` if an older optuna (2.x) wrote it, else None.

    Read-only: optuna's RDBStorage would first add its tables to the file and then refuse it;
    and after `optuna storage upgrade` older optunas cannot read it, so only the user decides.
    """
    try:
        with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None  # no optuna schema to compare: optuna says what is wrong, if anything
    import optuna

    # The schema version this optuna writes: a new in-memory storage is created at the head.
    head = optuna.storages.RDBStorage("sqlite:///:memory:").get_current_version()
    if not row or row[0] == head:
        return None
    return (
        f"{file}: the study file has the schema of an older optuna ({row[0]}; optuna "
        f"{optuna.__version__} needs {head}); upgrade it once (older optuna versions cannot "
        f"read it afterwards) with: optuna storage upgrade --storage sqlite:///{file}"
    )
