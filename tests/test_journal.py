"""Several sweep processes on one journal study (`hydra.sweeper.storage=journal:///...`).

What a cluster without a database server does: sweeps started at once, each with its own sweep
dir, share one optuna journal file; then one of them is killed with SIGKILL in the middle of
its trial and the study is resumed. Tiny trials (RNN, 8 units, 1 epoch on 500 digits).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from rnnlab.runs import Status
from rnnlab.storage import HEARTBEAT_ATTR, open_storage
from sweeping import TINY_TRIAL, sweep_env

REPO = Path(__file__).resolve().parents[1]
TINY = [
    *TINY_TRIAL,
    "model=rnn",
    "trainer.save_checkpoints=false",
    "hydra/sweeper=rnnlab_optuna",
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.study_name=j",
    "hydra.sweeper.resume=true",
    "optimizer.lr=interval(0.001,0.05)",
]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _start(tmp_path: Path, data_dir: Path, url: str, name: str, *args: str) -> subprocess.Popen:
    env = sweep_env()
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            f"paths.data_dir={data_dir}",
            f"paths.output_root={tmp_path / 'outputs'}",
            *TINY,
            f"hydra.sweeper.storage={url}",
            f"hydra.sweep.dir={tmp_path / name}",
            *args,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"sweep exited {proc.returncode}:\n{out[-5000:]}"


def _trials(url: str) -> dict[int, optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name="j", storage=open_storage(url))
    return {t.number: t for t in study.get_trials()}


@pytest.mark.slow
def test_four_sweeps_share_a_journal_study_then_sigkill_and_resume(
    tmp_path: Path, data_dir: Path
) -> None:
    url = f"journal://{tmp_path / 'shared' / 'study.log'}"
    sweeps = [
        _start(tmp_path, data_dir, url, f"sweep{i}", "hydra.sweeper.n_trials=2") for i in range(4)
    ]
    for proc in sweeps:
        _finish(proc)

    trials = _trials(url)
    assert sorted(trials) == list(range(8))  # unique numbers, as many as asked for in all
    for t in trials.values():
        # The median pruner may stop a trial after its first epoch: the job asked it through
        # the journal.
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED), t.user_attrs.get("reason")
        assert t.user_attrs["status"] in (Status.COMPLETED, Status.PRUNED)
        assert t.intermediate_values  # the job reported its epochs to the journal (pruning)
        assert isinstance(t.system_attrs.get(HEARTBEAT_ATTR), float)
    by_sweep = sorted(str(t.user_attrs["sweep_dir"]) for t in trials.values())
    assert by_sweep == sorted(str(tmp_path / f"sweep{i}") for i in range(4) for _ in range(2))
    assert len({t.user_attrs["run_dir"] for t in trials.values()}) == 8

    # One more sweep, killed with SIGKILL once its trial is RUNNING and its job has started.
    victim = _start(
        tmp_path, data_dir, url, "victim", "hydra.sweeper.n_trials=1", "trainer.epochs=200"
    )
    deadline = time.monotonic() + 180
    run_dir = None
    while time.monotonic() < deadline and victim.poll() is None:
        t8 = _trials(url).get(8)
        run_dir = t8 and t8.state == TrialState.RUNNING and t8.user_attrs.get("run_dir")
        if run_dir:  # the job records its run dir when it opens the trial
            break
        time.sleep(0.3)
    assert victim.poll() is None and run_dir, victim.communicate()[0][-3000:]
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert _trials(url)[8].state == TrialState.RUNNING

    _finish(_start(tmp_path, data_dir, url, "resume", "hydra.sweeper.n_trials=1"))
    after = _trials(url)
    assert sorted(after) == list(range(10))
    for n, t in trials.items():  # nothing lost, nothing repeated or changed
        assert (after[n].state, after[n].value, after[n].params) == (t.state, t.value, t.params)
    killed = after[8]
    assert killed.state == TrialState.FAIL
    assert killed.user_attrs["status"] == Status.INTERRUPTED
    assert "died" in killed.user_attrs["reason"]
    assert after[9].state in (TrialState.COMPLETE, TrialState.PRUNED)


@pytest.mark.slow
def test_trial_abandoned_on_another_host_fails_once_its_journal_heartbeat_stops(
    tmp_path: Path, data_dir: Path
) -> None:
    """Trials left RUNNING in the journal by a sweep on another host: the one whose heartbeat
    stopped long ago is recorded as interrupted on resume, the one still beating is left
    alone, and the new trial's sweep and job beat through the journal."""
    url = f"journal://{tmp_path / 'shared' / 'study.log'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="j", storage=storage, direction="maximize")
    elsewhere = {"host": "node-that-is-not-this-one", "pid": 4242, "start": "1"}
    abandoned, alive = study.ask(), study.ask()
    for t in (abandoned, alive):
        t.set_user_attr("owner", elsewhere)
    # As the other host's sweep wrote them: one beat long ago, one just now.
    storage.set_trial_system_attr(abandoned._trial_id, HEARTBEAT_ATTR, time.time() - 3600)
    storage.set_trial_system_attr(alive._trial_id, HEARTBEAT_ATTR, time.time())

    _finish(_start(tmp_path, data_dir, url, "resume", "hydra.sweeper.n_trials=1"))
    trials = _trials(url)
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["status"] == Status.INTERRUPTED
    assert "no heartbeat" in trials[0].user_attrs["reason"]
    assert trials[1].state == TrialState.RUNNING
    assert trials[2].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert isinstance(trials[2].system_attrs.get(HEARTBEAT_ATTR), float)


@pytest.mark.slow
def test_relative_journal_path_fails_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    proc = _start(tmp_path, data_dir, "journal://rel/study.log", "s", "hydra.sweeper.n_trials=1")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "journal://rel/study.log: a journal storage needs an absolute path" in out
    assert "Traceback" not in out
    assert not (tmp_path / "rel").exists()
