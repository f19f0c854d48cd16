"""Optuna sweeps among the compared runs: their trials, and parameter importances.

The trials come from the sweeper's trials.csv (it also knows trials that left no run
folder), else from the run folders in job order. Untrusted like every file compare reads:
a row whose trial number is not a sane integer is left out, with a note.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnlab import runs
from rnnlab.compare.fields import SEED_KEY, as_number, finite_number
from rnnlab.compare.files import Unreadable, read_text
from rnnlab.compare.rundirs import Run
from rnnlab.compare.select import differing_keys
from rnnlab.runs import Direction, Status

# Optuna numbers trials from 0; anything past this is not a trial number but garbage.
MAX_TRIAL_NUMBER = 10**9
# Optuna's trial states, for runs that left no trials.csv.
_STATE = {
    Status.COMPLETED: "COMPLETE",
    Status.DIVERGED: "COMPLETE",  # a diverged run reports the worst objective, completed
    Status.PRUNED: "PRUNED",
    Status.FAILED: "FAIL",
}
COMPLETE = "COMPLETE"


def optuna_sweeps(selected: Sequence[Run]) -> dict[Path, list[Run]]:
    """Sweep folders written by the Optuna sweeper (trials.csv or optimization_results.yaml)."""
    sweeps: dict[Path, list[Run]] = {}
    checked: dict[Path, bool] = {}
    for run in selected:
        parent = run.path.parent
        if parent not in checked:
            checked[parent] = any(
                (parent / f).is_file() for f in (runs.TRIALS_FILE, runs.OPTUNA_RESULTS_FILE)
            )
        if checked[parent]:
            sweeps.setdefault(parent, []).append(run)
    return sweeps


def read_trials(sweep_dir: Path, members: Sequence[Run], notes: list[str]) -> list[dict[str, Any]]:
    """The sweep's trials: number, state, objective, params (sorted by number). What cannot
    be used is left out and said in `notes`."""
    trials = _trials_csv(sweep_dir / runs.TRIALS_FILE, notes)
    if trials:
        return sorted(trials, key=lambda t: t["number"])
    ordered = sorted(members, key=_job_number)
    varying = [k for k in differing_keys(ordered) if k != SEED_KEY]
    return [
        {
            "number": i,
            "state": _STATE.get(r.status, r.status.upper()),
            "objective": finite_number(r.summary.get("objective")),
            "params": {k: r.value(k) for k in varying},
        }
        for i, r in enumerate(ordered)
    ]


def _job_number(run: Run) -> float:
    """A multirun job folder's number (0, 1, ...); other names last."""
    number = finite_number(run.path.name)
    return math.inf if number is None else number


def _trials_csv(path: Path, notes: list[str]) -> list[dict[str, Any]]:
    try:
        rows = list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    except FileNotFoundError:
        return []
    except (OSError, Unreadable, csv.Error) as e:
        notes.append(f"{path}: {e}")
        return []
    trials = []
    bad = 0
    for row in rows:
        number = as_number(row.get("number"))
        if number is None or not number.is_integer() or not 0 <= number <= MAX_TRIAL_NUMBER:
            bad += 1
            continue
        params = {
            k[len("params_") :]: _param(v)
            for k, v in row.items()
            if isinstance(k, str) and k.startswith("params_") and isinstance(v, str) and v
        }
        state = row.get("state")
        trials.append(
            {
                "number": int(number),
                "state": state.upper() if isinstance(state, str) else "",
                "objective": finite_number(row.get("objective")),
                "params": params,
            }
        )
    if bad:
        notes.append(
            f"{path}: {bad} row(s) without a trial number from 0 to {MAX_TRIAL_NUMBER:,};"
            " left out of the plots"
        )
    return trials


def _param(text: str) -> Any:
    number = finite_number(text)
    if number is None:
        return text
    integral = number.is_integer() and "." not in text and "e" not in text.lower()
    return int(number) if integral else number


def param_importances(trials: list[dict[str, Any]], mode: Direction) -> dict[str, float]:
    """Importance of each parameter for the objective over the complete trials.

    optuna's fANOVA evaluator when it can run (optuna and scikit-learn present, enough
    trials); otherwise the correlation ratio eta^2 of each parameter (the share of the
    objective's variance explained by the parameter's values, numbers binned in quartiles).
    """
    complete = [t for t in trials if t["state"] == COMPLETE and t["objective"] is not None]
    names = sorted({k for t in complete for k in t["params"]})
    names = [n for n in names if len({repr(t["params"].get(n)) for t in complete}) > 1]
    if len(complete) < 3 or not names:
        return {}
    try:
        return _optuna_importances(complete, names, mode)
    except Exception:  # noqa: BLE001 - any failure of the optional evaluator: use eta^2
        return _eta_squared(complete, names)


def _optuna_importances(
    complete: list[dict[str, Any]], names: list[str], mode: Direction
) -> dict[str, float]:
    import optuna
    from optuna import distributions as d

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists: dict[str, Any] = {}
    for name in names:
        values = [t["params"].get(name) for t in complete]
        if all(finite_number(v) is not None and not isinstance(v, str) for v in values):
            lo, hi = min(values), max(values)
            if all(isinstance(v, int) for v in values):
                dists[name] = d.IntDistribution(int(lo), int(hi))
            elif lo > 0 and hi / lo >= 100:
                dists[name] = d.FloatDistribution(float(lo), float(hi), log=True)
            else:
                dists[name] = d.FloatDistribution(float(lo), float(hi))
        else:
            dists[name] = d.CategoricalDistribution(sorted({str(v) for v in values}))
    study = optuna.create_study(direction=mode.optuna)
    for t in complete:
        params = {
            n: (
                str(t["params"].get(n))
                if isinstance(dists[n], d.CategoricalDistribution)
                else t["params"].get(n)
            )
            for n in names
        }
        if any(v is None for v in params.values()):
            continue
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=dists, value=t["objective"])
        )
    return dict(optuna.importance.get_param_importances(study))


def _eta_squared(complete: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    ys = [float(t["objective"]) for t in complete]
    mean = sum(ys) / len(ys)
    total = sum((y - mean) ** 2 for y in ys)
    out: dict[str, float] = {}
    for name in names:
        values = [t["params"].get(name) for t in complete]
        numbers = [finite_number(v) for v in values]
        if all(n is not None for n in numbers) and len(set(numbers)) > 4:
            cuts = sorted(n for n in numbers if n is not None)
            edges = [cuts[len(cuts) * q // 4] for q in (1, 2, 3)]
            keys: list[Any] = [sum(n >= e for e in edges) for n in numbers if n is not None]
        else:
            keys = [repr(v) for v in values]
        groups: dict[Any, list[float]] = {}
        for k, y in zip(keys, ys, strict=True):
            groups.setdefault(k, []).append(y)
        between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values())
        out[name] = between / total if total > 0 else 0.0
    norm = sum(out.values())
    return {k: v / norm if norm else 0.0 for k, v in sorted(out.items(), key=lambda kv: -kv[1])}
