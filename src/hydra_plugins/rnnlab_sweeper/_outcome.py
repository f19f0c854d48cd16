"""What became of a trial: its job's return and its run folder's summary.json -> the trial's
state, values and user attributes in the study.

rnnlab runs write summary.json (status completed / diverged / pruned / failed / interrupted,
reason, objective, epochs); any other Hydra app only returns a value (or a list of values for
a multi-objective study) or raises. Nothing non-finite ever reaches optuna: a diverged run is
recorded with the worst value of each direction, so the sampler learns to avoid it.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from rnnlab import runs, secrets, slurm
from rnnlab.runs import Direction, Status

log = logging.getLogger(__name__)

# A trial state that no run status describes (a trial optuna has queued, not started).
WAITING = "waiting"
_HAS_VALUE = (Status.COMPLETED, Status.DIVERGED)


@dataclass
class Outcome:
    status: Status
    reason: str | None
    values: list[float] | None  # what the study is told (None unless completed or diverged)


def status_of(t: FrozenTrial) -> str:
    """The trial's run status (user attr), else what its optuna state says."""
    status = t.user_attrs.get("status")
    if status in set(Status):
        return Status(status)
    return {
        TrialState.COMPLETE: Status.COMPLETED,
        TrialState.PRUNED: Status.PRUNED,
        TrialState.FAIL: Status.FAILED,
        TrialState.RUNNING: Status.RUNNING,
    }.get(t.state, WAITING)


def read_summary(run_dir: str | None) -> dict[str, Any] | None:
    if not run_dir:
        return None
    try:
        summary = runs.read_summary(Path(run_dir))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def finished_summary(run_dir: str | None) -> dict[str, Any] | None:
    """The run's summary.json if it says the run has ended (any status but running)."""
    summary = read_summary(run_dir)
    if summary is not None and summary.get("status") in set(runs.FINAL_STATUSES):
        return summary
    return None


def mark_interrupted(run_dir: str | None, reason: str) -> dict[str, Any]:
    """summary.json of a run that ended without writing its own: status interrupted."""
    summary: dict[str, Any] = {
        "schema_version": runs.SCHEMA_VERSION,
        "status": Status.INTERRUPTED,
        "reason": reason,
        "objective": None,
        "epochs_completed": 0,
        "wall_time_s": None,
    }
    if not run_dir or not Path(run_dir).is_dir():
        return summary
    old = read_summary(run_dir)
    if old is not None:
        old.update(status=Status.INTERRUPTED, reason=reason)
        summary = old
    else:
        with contextlib.suppress(OSError, ValueError):
            summary["epochs_completed"] = len(runs.read_metrics(Path(run_dir)))
    try:
        runs.write_summary(Path(run_dir), summary)
    except OSError as e:
        log.error("could not mark %s interrupted: %s", run_dir, e)
    return summary


def run_dir_of(ret: JobReturn) -> str | None:
    if ret.hydra_cfg is None:
        return None
    return OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None)


def outcome_of(
    summary: dict[str, Any] | None,
    returned: Any,
    error: BaseException | None,
    directions: list[Direction],
    summary_objectives: list[str],
) -> Outcome:
    """The trial's outcome from its run's summary (if any), the job's return value and the
    exception it raised (if any)."""
    summary = summary or {}
    status, reason = summary.get("status"), summary.get("reason")
    if error is not None:
        if status not in (Status.FAILED, Status.INTERRUPTED) or not reason:
            status, reason = Status.FAILED, error_line(error)
    elif status is None:
        status = Status.COMPLETED  # a plain Hydra app: no summary.json, only a return value
    status = Status(status) if status in set(runs.FINAL_STATUSES) else Status.FAILED
    reason = secrets.mask_url(str(reason)) if reason else None
    if status not in _HAS_VALUE:
        return Outcome(status, reason, None)
    if status is Status.DIVERGED:
        return Outcome(status, reason, [d.worst for d in directions])
    if returned is None:
        returned = summary.get("objective")
    values = _values(returned, summary, summary_objectives)
    if values is None or len(values) != len(directions):
        got = "nothing" if returned is None else repr(returned)
        return Outcome(
            Status.FAILED,
            f"the run returned {got}; the study needs {len(directions)} finite number(s) "
            f"({', '.join(d.optuna for d in directions)})",
            None,
        )
    return Outcome(status, reason, values)


def error_line(error: BaseException) -> str:
    """An exception as one line of at most 500 characters, secrets masked."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return secrets.mask_url(text.splitlines()[0][:500])


def _values(returned: Any, summary: dict[str, Any], extra: list[str]) -> list[float] | None:
    raw = list(returned) if isinstance(returned, list | tuple) else [returned]
    raw += [summary.get(key) for key in extra]
    values = [_finite(v) for v in raw]
    return None if any(v is None for v in values) else values  # type: ignore[misc]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def record(
    storage: Any,
    study: optuna.Study,
    trial_id: int,
    number: int,
    outcome: Outcome,
    summary: dict[str, Any] | None,
    run_dir: str | None,
) -> None:
    """Tell the study, and keep the outcome in the trial's user attributes."""
    summary = summary or {}
    values = outcome.values
    if values is None and outcome.status is Status.PRUNED:
        values_kept = _finite(summary.get("objective"))
    else:
        values_kept = (values[0] if len(values) == 1 else values) if values else None
    attrs = {
        "status": str(outcome.status),
        "reason": outcome.reason,
        "run_dir": run_dir,
        "epochs": summary.get("epochs_completed"),
        "duration_s": summary.get("wall_time_s"),
        "objective": values_kept,
    }
    for key, val in attrs.items():
        storage.set_trial_user_attr(trial_id, key, val)
    state = {
        Status.COMPLETED: TrialState.COMPLETE,
        Status.DIVERGED: TrialState.COMPLETE,
        Status.PRUNED: TrialState.PRUNED,
    }.get(outcome.status, TrialState.FAIL)
    try:
        study.tell(number, values if state == TrialState.COMPLETE else None, state=state)
    except RuntimeError as e:  # the grid sampler stops the study when the grid is done
        if "Study.stop" not in str(e):
            raise
    shown = ", ".join(f"{v:.6g}" for v in values) if values else ""
    log.info(
        "trial %d %s%s%s",
        number,
        outcome.status,
        f": {outcome.reason}" if outcome.reason and outcome.status != Status.COMPLETED else "",
        f" (objective {shown})" if shown else "",
    )


def slurm_end(launcher: Any, error: BaseException, frozen: FrozenTrial) -> str | None:
    """How Slurm ended a trial's job ("cancelled by Slurm (job 12)", "time limit (job 13)",
    ...) when the trials run as Slurm jobs (`launcher`: hydra.launcher) and the launcher or
    the job reports an error; None otherwise."""
    if "slurm" not in str(launcher.get("_target_", "")).lower():
        return None
    job = (frozen.user_attrs.get("job") or {}).get("slurm_job_id")
    return slurm.launcher_error_reason(str(error), job)
