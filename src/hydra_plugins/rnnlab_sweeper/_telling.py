"""Telling the study what a trial's job left: its return value, its summary.json, or why it
never returned (a launcher error, Slurm ending the job, a sweep that was stopped)."""

from __future__ import annotations

import logging
from typing import Any

import optuna
from hydra.core.utils import JobReturn

from rnnlab.runs import Direction, Status
from rnnlab.storage import Heartbeat

from . import _outcome as outcome
from . import _study as studies
from ._optuna_seams import trial_id

log = logging.getLogger(__name__)

# Statuses that count against max_failure_rate.
FAILURES = (Status.FAILED, Status.INTERRUPTED)


class Teller:
    """Records each finished trial in the study (and its first error, for the sweep's end)."""

    def __init__(
        self,
        storage: Any,
        study_name: str,
        launcher_cfg: Any,
        directions: list[Direction],
        summary_objectives: list[str],
        heartbeat: Heartbeat,
    ) -> None:
        self.storage, self.study_name, self.launcher_cfg = storage, study_name, launcher_cfg
        self.directions, self.summary_objectives = directions, summary_objectives
        self.heartbeat = heartbeat
        self.first_error: str | None = None  # of this sweep's trials

    def settle(self, trial: optuna.trial.Trial, result: JobReturn | BaseException) -> str:
        """Record a trial whose launch has returned (or raised)."""
        if isinstance(result, BaseException):
            frozen = self.storage.get_trial(trial_id(trial))
            ended = outcome.slurm_end(self.launcher_cfg, result, frozen)
            if ended is not None:  # Slurm ended the job: its reason wins over the run's own
                return self.settle_unreturned(frozen, ended, known_end=True)
            return self.settle_unreturned(
                frozen, f"the launcher failed: {outcome.error_line(result)}"
            )
        run_dir = outcome.run_dir_of(result) or self.storage.get_trial(
            trial_id(trial)
        ).user_attrs.get("run_dir")
        summary = outcome.read_summary(run_dir)
        returned, error = None, None
        try:
            returned = result.return_value  # raises the job's exception if it failed
        except Exception as e:
            error = e
            frozen = self.storage.get_trial(trial_id(trial))
            ended = outcome.slurm_end(self.launcher_cfg, e, frozen)  # e.g. a time limit
            if ended is not None:
                return self.settle_unreturned(frozen, ended, known_end=True)
        result_outcome = outcome.outcome_of(
            summary, returned, error, self.directions, self.summary_objectives
        )
        return self._record(trial_id(trial), trial.number, result_outcome, summary, run_dir)

    def settle_unreturned(
        self, frozen: optuna.trial.FrozenTrial, reason: str, known_end: bool = False
    ) -> str:
        """Record a trial whose job never returned: from its summary.json if the run got as
        far as finishing, else as interrupted (and say so in the run dir). `known_end`: the
        reason is how the job really ended (e.g. cancelled by Slurm) and replaces the one a
        run that stopped on its signal gave itself ("stopped by SIGTERM")."""
        try:
            frozen = self.storage.get_trial(trial_id(frozen))
            if frozen.state.is_finished():
                return outcome.status_of(frozen)
            run_dir = frozen.user_attrs.get("run_dir")
            summary = outcome.finished_summary(run_dir)
            if summary is None or (known_end and summary.get("status") in FAILURES):
                summary = outcome.mark_interrupted(run_dir, reason)
            directions = studies.directions_of(studies.load_study(self.storage, self.study_name))
            result = outcome.outcome_of(summary, None, None, directions, self.summary_objectives)
            return self._record(trial_id(frozen), frozen.number, result, summary, run_dir)
        except Exception as e:
            log.error("could not record trial %d: %s", frozen.number, outcome.error_line(e))
            return Status.FAILED

    def _record(
        self,
        tid: int,
        number: int,
        result: outcome.Outcome,
        summary: dict[str, Any] | None,
        run_dir: str | None,
    ) -> str:
        self.heartbeat.discard(tid)
        try:
            study = studies.load_study(self.storage, self.study_name)
            outcome.record(self.storage, study, tid, number, result, summary, run_dir)
        except Exception as e:
            log.error("could not record trial %d in the study: %s", number, outcome.error_line(e))
            return Status.FAILED
        if result.status in FAILURES and self.first_error is None and result.reason:
            self.first_error = f"trial {number}: {result.reason}"
        return result.status
