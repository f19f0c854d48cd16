"""Opening the study: storage, a study created or resumed, old schemas refused, and trials left
RUNNING by a sweep that died settled from what their run folders say."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from rnnlab import secrets, sweeps
from rnnlab.runs import Direction
from rnnlab.storage import STALE_AFTER_S, older_schema_problem, open_storage, stale_trial_ids

from ._errors import SweepConfigError
from ._optuna_seams import study_id, trial_id
from ._outcome import finished_summary

log = logging.getLogger(__name__)

_RACING = ("UNIQUE constraint", "already exists", "database is locked", "duplicate key")


def open_study_storage(url: str) -> Any:
    """The study's storage; an unreachable server, a bad URL or an old schema is one line.

    Sweeps started together race to create the tables: the loser retries.
    """
    masked = secrets.mask_url(url)
    check_schema(url)
    for attempt in range(6):
        try:
            with warnings.catch_warnings():
                # heartbeat_interval is "experimental" (since optuna 2.9): said once per call.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return open_storage(url)
        except Exception as e:
            racing = any(m in str(e) for m in _RACING)
            if not racing or attempt == 5:
                raise SweepConfigError(
                    f"hydra.sweeper.storage={masked}: cannot open the study's storage: "
                    f"{str(e).splitlines()[0]}"
                ) from None
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


@functools.cache
def check_schema(url: str) -> None:
    """Refuse, without touching it, a SQLite study file written by an older optuna (2.x)."""
    if not url.startswith("sqlite:///"):
        return
    path = Path(url[len("sqlite:///") :].split("?", 1)[0])
    problem = older_schema_problem(path) if path.is_file() else None
    if problem is not None:
        raise SweepConfigError(problem)


def load_study(storage: Any, name: str) -> optuna.Study:
    """A fresh Study object: optuna's storage cache would hide what the jobs wrote to the
    trials (intermediate values, run dir), so asking and telling each use their own."""
    return optuna.load_study(
        study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
    )


def directions_of(study: optuna.Study) -> list[Direction]:
    return [Direction.from_optuna(d) for d in study.directions]


def create_or_resume(
    storage: Any, name: str, directions: list[Direction], resume: bool, where: str
) -> optuna.Study:
    """The study `name`: created, or an existing one continued only with resume=true."""
    try:
        study = load_study(storage, name)
    except KeyError:
        study = None
    if study is not None:
        if directions_of(study) != directions:
            raise SweepConfigError(
                f"study {name} in {where} was created to "
                f"{_spell(directions_of(study))}, this sweep would {_spell(directions)}; use "
                "another hydra.sweeper.study_name"
            )
        n = len(study.get_trials(deepcopy=False))
        if n and not resume:
            raise SweepConfigError(
                f"study {name} in {where} already has {n} trials; add "
                "hydra.sweeper.resume=true to continue it, or set "
                "hydra.sweeper.study_name=<new name> to start a new study"
            )
        return study
    for attempt in range(5):
        try:
            optuna.create_study(
                study_name=name,
                storage=storage,
                directions=[d.optuna for d in directions],
                load_if_exists=True,
            )
            return load_study(storage, name)
        except Exception:  # another sweep created the tables or the study just now
            if attempt == 4:
                raise
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def _spell(directions: list[Direction]) -> str:
    return ", ".join(d.optuna for d in directions)


def recover_abandoned(
    storage: Any, study: optuna.Study, settle: Callable[[FrozenTrial, str], None]
) -> None:
    """Settle the trials left RUNNING by a sweep process that died (kill -9, a full disk...):
    `settle(trial, reason)` records each from its run folder."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return
    stale = stale_trial_ids(storage, study_id(study))
    for t in running:
        reason = abandoned(t, trial_id(t) in stale)
        if reason is not None:
            log.warning("trial %d was left running: %s", t.number, reason)
            settle(t, reason)


def abandoned(t: FrozenTrial, stale: bool) -> str | None:
    """Why trial `t`, found RUNNING, has no live sweep behind it; None if it may still run.

    On this host the sweep process (owner) and the job are checked directly; a process on
    another host (a cooperating sweep, a Slurm job) only through the trial's heartbeat. A
    finished run folder is trusted over the RUNNING record (its sweep died before telling).
    """
    owner, job = t.user_attrs.get("owner"), t.user_attrs.get("job")
    if owner is None:
        # The sweep records itself as owner the moment optuna creates the trial: none means
        # it died in that instant. Such a trial is abandoned once it is old enough that no
        # live sweep can still be about to write its owner.
        started = t.datetime_start
        if started is None or time.time() - started.timestamp() < STALE_AFTER_S:
            return None
        return "no sweep process ever recorded it (its sweep died as it asked for the trial)"
    owner_alive = sweeps.process_alive(owner)
    if owner_alive:
        return None  # a live sweep (maybe a cooperating one) will tell it
    if owner_alive is None and not stale:
        return None  # on another host and still beating
    pid, host = owner.get("pid"), owner.get("host")
    if owner_alive is False:
        gone = f"sweep process {pid} died during the trial"
    else:
        gone = f"no heartbeat for over {STALE_AFTER_S} s from sweep process {pid} on {host}"
    if finished_summary(t.user_attrs.get("run_dir")) is not None:
        return gone
    job_alive = sweeps.process_alive(job)
    if job_alive:
        # An orphaned job of a dead sweep (a joblib worker it left behind): stop it, as the
        # sweep would have; it records itself as interrupted.
        _terminate(job)
        return f"{gone}; its job (pid {job.get('pid')}) was stopped"
    if job is not None and job_alive is None and not stale:
        return None
    return gone


def _terminate(identity: dict[str, Any]) -> None:
    with contextlib.suppress(OSError, KeyError, TypeError, ValueError):
        os.kill(int(identity["pid"]), signal.SIGTERM)
