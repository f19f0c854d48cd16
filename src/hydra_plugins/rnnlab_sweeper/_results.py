"""The sweep folder's results: optimization_results.yaml (the best trial, or the Pareto front
of a multi-objective study) and trials.csv (one row per trial of the study)."""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from rnnlab import runs
from rnnlab.runs import Direction, Status

from ._outcome import status_of

log = logging.getLogger(__name__)


def write_results(
    sweep_dir: Path,
    study: optuna.Study,
    directions: list[Direction],
    storage_shown: str,
    this_sweep: Counter[str],
    metric: str,
) -> None:
    trials = study.get_trials(deepcopy=False)
    totals = Counter(status_of(t) for t in trials)
    log.info(
        "This sweep: %s. Study %s now has %d trials: %s.",
        _counts(this_sweep, runs.FINAL_STATUSES) or "no trials",
        study.study_name,
        len(trials),
        _counts(totals, tuple(Status)),
    )
    results: dict[str, Any] = {
        "name": "optuna",
        "study_name": study.study_name,
        "storage": storage_shown,
        "direction": [d.optuna for d in directions]
        if len(directions) > 1
        else directions[0].optuna,
        "n_trials": len(trials),
        "trials_by_status": dict(totals),
    }
    # Diverged trials carry a stand-in value: they are never the best.
    completed = [
        t for t in trials if t.state == TrialState.COMPLETE and status_of(t) == Status.COMPLETED
    ]
    if len(directions) > 1:
        front = _pareto_front(completed, directions)
        results["best_trials"] = [_solution(t) for t in front]
        log.info(
            "Pareto front: %d trials (%s)", len(front), ", ".join(str(t.number) for t in front)
        )
    elif completed:
        direction = directions[0]
        best = completed[0]
        for t in completed[1:]:
            if direction.better(t.value, best.value):
                best = t
        results.update(
            best_params=dict(best.params),
            best_value=best.value,
            best_trial=best.number,
            best_run_dir=best.user_attrs.get("run_dir"),
        )
        log.info(
            "Best trial %d: %s = %s, params %s, run dir %s",
            best.number,
            metric,
            best.value,
            dict(best.params),
            best.user_attrs.get("run_dir"),
        )
    else:
        results.update(best_params=None, best_value=None, best_trial=None, best_run_dir=None)
    if not completed:
        log.warning("No trial of study %s has completed yet", study.study_name)
    runs.atomic_write(
        sweep_dir / runs.OPTUNA_RESULTS_FILE, OmegaConf.to_yaml(OmegaConf.create(results))
    )
    runs.atomic_write(sweep_dir / runs.TRIALS_FILE, trials_csv(trials))
    log.info("Wrote %s and %s", sweep_dir / runs.OPTUNA_RESULTS_FILE, sweep_dir / runs.TRIALS_FILE)


def _counts(counts: Counter[str], order: tuple[Status, ...]) -> str:
    return ", ".join(f"{counts[s]} {s}" for s in order if counts[s])


def _solution(t: FrozenTrial) -> dict[str, Any]:
    return {
        "number": t.number,
        "params": dict(t.params),
        "values": list(t.values),
        "run_dir": t.user_attrs.get("run_dir"),
    }


def _pareto_front(trials: list[FrozenTrial], directions: list[Direction]) -> list[FrozenTrial]:
    """The trials no other trial dominates (at least as good in every objective, better in
    one)."""

    def dominates(a: FrozenTrial, b: FrozenTrial) -> bool:
        pairs = list(zip(a.values, b.values, directions, strict=True))
        return all(not d.better(y, x) for x, y, d in pairs) and any(
            d.better(x, y) for x, y, d in pairs
        )

    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]


def trials_csv(trials: list[FrozenTrial]) -> str:
    """One row per trial of the study: number, state, status, params_*, objective, ..."""
    names = sorted({name for t in trials for name in t.params})
    columns = [
        "number",
        "state",
        "status",
        *(f"params_{n}" for n in names),
        "objective",
        "epochs",
        "duration_s",
        "run_dir",
        "reason",
    ]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        duration = a.get("duration_s")
        if duration is None and t.datetime_start and t.datetime_complete:
            duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 3)
        objective = a.get("objective", t.values[0] if t.values and len(t.values) == 1 else t.values)
        if isinstance(objective, list):
            objective = " ".join(str(v) for v in objective)
        writer.writerow(
            [
                t.number,
                t.state.name,
                status_of(t),
                *(t.params.get(n, "") for n in names),
                "" if objective is None else objective,
                "" if a.get("epochs") is None else a["epochs"],
                "" if duration is None else duration,
                a.get("run_dir") or "",
                a.get("reason") or "",
            ]
        )
    return buf.getvalue()
