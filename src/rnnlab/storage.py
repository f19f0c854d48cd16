"""The Optuna storage a sweep and its trials share, and the trials' heartbeats in it."""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

from rnnlab.secrets import mask_url

log = logging.getLogger(__name__)

# Seconds a SQLite connection waits for another process's write lock before it gives up:
# parallel trials and cooperating sweeps all write to the same file.
SQLITE_TIMEOUT_S = 120
# A running trial's heartbeat is recorded in the storage (with the database's clock) this often,
# by its sweep process while the trial waits or runs and by the job while it trains. A trial
# left RUNNING whose processes are on another host counts as abandoned once its last beat is
# older than STALE_AFTER_S; on this host the sweeper checks the processes themselves.
HEARTBEAT_S = 30
STALE_AFTER_S = 600


@functools.lru_cache(maxsize=8)
def open_storage(url: str) -> Any:
    """An optuna RDBStorage for `url`; for SQLite the folder is created and writers wait.

    One per URL and process: trials run in the sweep's process by the basic launcher would
    otherwise each leave a connection pool behind.
    """
    import optuna

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
    else:
        engine_kwargs["pool_pre_ping"] = True
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=HEARTBEAT_S,
        grace_period=STALE_AFTER_S,
    )


def stale_trial_ids(storage: Any, study_id: int) -> set[int]:
    """RUNNING trials of the study whose last heartbeat is older than STALE_AFTER_S (trials that
    never recorded one, e.g. from before heartbeats, are not included)."""
    # optuna 2.10 has no public way to find them without failing them, and we record failed
    # trials ourselves (reason, run dir); the hydra-optuna-sweeper pin keeps optuna at 2.10.x.
    return set(storage._get_stale_trial_ids(study_id))


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
            self._storage.record_heartbeat(trial_id)
        except Exception as e:
            if not self._warned:
                self._warned = True
                log.warning(
                    "could not record the heartbeat of trial id %d (%s); will keep trying",
                    trial_id,
                    mask_url(f"{type(e).__name__}: {e}"),
                )
