"""Per-epoch reports from a training run to the Optuna trial it belongs to (pruning).

The rnnlab sweeper (hydra/sweeper=rnnlab_optuna) sets `cfg.trial` for each job to
`{study_name, number, trial_id, storage}`; plain runs have `trial: null`. The job reopens the
study from the shared storage, reports the optimised metric after every epoch and asks the
study's pruner (stored on the trial by the sweeper) whether to stop.

Reporting must never break training: if the storage cannot be reached the run goes on
without pruning and says so once in its log. A job whose sweep process is gone (kill -9 of a
joblib sweep) stops itself, as if it had been sent SIGTERM: nobody would record its result.

optuna is imported only when a trial reports (plain runs never import it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

from rnnlab import runs, secrets, sweeps
from rnnlab.storage import Heartbeat, open_storage

log = logging.getLogger(__name__)

# Seconds between two checks that the sweep process is still alive.
WATCH_S = 2.0
# Seconds an orphaned job (its sweep died) has to record itself as interrupted before its
# process exits.
ORPHAN_EXIT_S = 60.0


class TrialReporter:
    """Reports the optimised metric of trial `trial_id` after each epoch and says whether to
    stop early."""

    def __init__(self, study_name: str, trial_id: int, storage_url: str) -> None:
        import optuna

        with warnings.catch_warnings():
            # heartbeat_interval is "experimental" (since optuna 2.9): noise in every trial's log.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = open_storage(storage_url)
        self._storage = storage
        attrs = storage.get_trial(trial_id).user_attrs
        study = optuna.load_study(
            study_name=study_name,
            storage=storage,
            # The sampler is never used here; RandomSampler is the cheapest to build.
            sampler=optuna.samplers.RandomSampler(),
            pruner=_build_pruner(attrs.get("pruner")),
        )
        self._trial = optuna.trial.Trial(study, trial_id)
        # Optuna prunes single-objective studies only.
        self._broken = len(study.directions) > 1
        # Tell the sweeper which process and folder this trial is, so that a sweep resumed
        # after a crash can find the run dir and check whether the job is still alive.
        self._trial.set_user_attr("job", sweeps.process_identity())
        run_dir = self._run_dir = _run_dir()
        if run_dir is not None:
            self._trial.set_user_attr("run_dir", run_dir)
        # Beats while the job trains, so a sweep on another host can tell it is still alive.
        self._heartbeat = Heartbeat(storage)
        self._heartbeat.add(trial_id)
        self._closed = threading.Event()
        owner = attrs.get("owner")
        if owner and owner.get("pid") != os.getpid():
            threading.Thread(
                target=self._watch, args=(owner,), name="watch-sweep", daemon=True
            ).start()

    def should_prune(self, epoch: int, value: float) -> bool:
        if self._broken or not math.isfinite(value):
            return False
        try:
            self._trial.report(float(value), epoch)
            return bool(self._trial.should_prune())
        except Exception as e:  # the database went away: keep training, stop reporting
            log.warning(
                "could not report epoch %d to the Optuna study (%s); this run goes on "
                "without pruning",
                epoch,
                secrets.mask_url(f"{type(e).__name__}: {e}"),
            )
            self._broken = True
            return False

    def close(self) -> None:
        self._closed.set()
        self._heartbeat.stop()
        with contextlib.suppress(Exception):
            self._storage.remove_session()

    def _watch(self, owner: dict[str, Any]) -> None:
        """Once the sweep process that launched this job has died on this host: stop the run
        (SIGTERM: it records itself as interrupted), then end this process, a worker that no
        sweep will ever give work again (joblib's would idle for minutes)."""
        while not self._closed.wait(WATCH_S):
            if sweeps.process_alive(owner) is False:
                break
        else:
            return
        log.warning("the sweep process %s of this trial is gone: stopping", owner.get("pid"))
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + ORPHAN_EXIT_S
        while time.monotonic() < deadline:
            summary = _summary_status(self._run_dir)
            if summary is not None and summary != runs.Status.RUNNING:
                break
            time.sleep(0.2)
        logging.shutdown()
        os._exit(128 + signal.SIGTERM)


def reporter_from_config(trial_cfg: Any) -> TrialReporter | None:
    """The reporter for `cfg.trial`, or None for a plain run (or if the study is unreachable)."""
    if not trial_cfg:
        return None
    try:
        url = secrets.real_storage_url(str(trial_cfg["storage"]))
        if secrets.MASK in url:
            log.warning(
                "trial.storage is masked and %s is not set in this process: the "
                "trial cannot report to its study (no pruning)",
                secrets.STORAGE_ENV,
            )
            return None
        return TrialReporter(str(trial_cfg["study_name"]), int(trial_cfg["trial_id"]), url)
    except Exception as e:
        log.warning(
            "cannot report to the Optuna study (%s); no pruning for this run",
            secrets.mask_url(f"{type(e).__name__}: {e}"),
        )
        return None


def _build_pruner(spec: Any) -> Any:
    import optuna

    if not spec:
        return optuna.pruners.NopPruner()
    from hydra.utils import instantiate

    return instantiate(dict(spec))


def _summary_status(run_dir: str | None) -> str | None:
    if not run_dir:
        return None
    try:
        return runs.read_summary(Path(run_dir)).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _run_dir() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return str(HydraConfig.get().runtime.output_dir)
    except Exception:
        pass
    return None
