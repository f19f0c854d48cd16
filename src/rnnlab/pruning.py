"""Per-epoch reports from a training run to the Optuna trial it belongs to (pruning).

The rnnlab sweeper (hydra/sweeper=rnnlab_optuna) sets `cfg.trial` for each job to
`{study_name, number, trial_id, storage}`; plain runs have `trial: null`. The job reopens the
study from the shared storage, reports the optimised metric after every epoch and asks the
study's pruner (stored on the trial by the sweeper) whether to stop.

Reporting must never break training: if the storage cannot be reached the run goes on
without pruning and says so once in its log.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

from rnnlab import secrets, sweeps
from rnnlab.storage import Heartbeat, open_storage

log = logging.getLogger(__name__)


class TrialReporter:
    """Reports the optimised metric after each epoch and says whether to stop early."""

    def should_prune(self, epoch: int, value: float) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class OptunaTrialReporter(TrialReporter):
    """Reports to trial `trial_id` of an Optuna study in an RDB storage."""

    def __init__(self, study_name: str, trial_id: int, storage_url: str) -> None:
        import optuna

        storage = open_storage(storage_url)
        self._storage = storage
        self._trial_id = trial_id
        attrs = storage.get_trial(trial_id).user_attrs
        pruner = _build_pruner(attrs.get("pruner"))
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
        self._trial = optuna.trial.Trial(study, trial_id)
        # Tell the sweeper which process and folder this trial is, so that a sweep resumed
        # after a crash can find the run dir and check whether the job is still alive.
        self._trial.set_user_attr("job", sweeps.process_identity())
        run_dir = _run_dir()
        if run_dir is not None:
            self._trial.set_user_attr("run_dir", run_dir)
        # Beats while the job trains, so a sweep on another host can tell it is still alive.
        self._heartbeat = Heartbeat(storage)
        self._heartbeat.add(trial_id)
        self._broken = False

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
        self._heartbeat.stop()
        with contextlib.suppress(Exception):
            self._storage.remove_session()


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
        return OptunaTrialReporter(str(trial_cfg["study_name"]), int(trial_cfg["trial_id"]), url)
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


def _run_dir() -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return str(HydraConfig.get().runtime.output_dir)
    except Exception:
        pass
    return None
