"""Sweeps that die or cannot start leave nothing behind: no trial RUNNING forever, no workers
training for nobody, one line instead of a traceback, old study files untouched."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hydra_plugins.rnnlab_sweeper._optuna_seams import trial_id
from hydra_plugins.rnnlab_sweeper._study import abandoned
from rnnlab import sweeps
from rnnlab.runs import SUMMARY_FILE, Status
from rnnlab.storage import STALE_AFTER_S, open_storage
from sweeping import TINY_TRIAL, sweep_env

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "optuna-2.10-study.sql"
TINY = [
    *TINY_TRIAL,
    "trainer.save_checkpoints=false",
    "hydra/sweeper=rnnlab_optuna",
]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _cmd(out: Path, data_dir: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        f"paths.data_dir={data_dir}",
        f"paths.output_root={out}",
        *TINY,
        *args,
    ]


def _env() -> dict[str, str]:
    return sweep_env()


def _run(out: Path, data_dir: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        _cmd(out, data_dir, *args),
        cwd=out,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
        **kw,
    )


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("rnnlab: error:")]
    for needle in needles:
        assert needle in line, line
    return line


def _dead_process() -> dict:
    child = subprocess.Popen(["true"])
    identity = sweeps.process_identity(child.pid)
    child.wait()
    return identity


# --------------------------------------------------------------------------- in-process


def test_a_finished_run_folder_is_trusted_over_a_running_record(tmp_path: Path) -> None:
    """The sweep died after its job finished (a joblib worker still alive, idle): the run
    folder says completed, so the trial is settled, not left RUNNING."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(study_name="s", storage=storage)
    t = study.ask()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / SUMMARY_FILE).write_text(
        json.dumps({"status": Status.COMPLETED, "objective": 0.5, "epochs_completed": 1})
    )
    t.set_user_attr("owner", _dead_process())
    t.set_user_attr("job", sweeps.process_identity())  # alive: this very process
    t.set_user_attr("run_dir", str(run_dir))
    frozen = storage.get_trial(trial_id(t))
    assert "died" in (abandoned(frozen, stale=False) or "")


def test_a_trial_whose_sweep_died_as_it_asked_is_recovered(tmp_path: Path) -> None:
    """No owner recorded (the sweep died between creating the trial and recording itself):
    abandoned once older than STALE_AFTER_S, left alone while fresh."""
    url = f"sqlite:///{tmp_path}/o.db"
    storage = open_storage(url)
    study = optuna.create_study(study_name="o", storage=storage)
    t = study.ask()
    assert abandoned(storage.get_trial(trial_id(t)), stale=False) is None
    long_ago = datetime.now() - timedelta(seconds=STALE_AFTER_S + 60)
    with sqlite3.connect(f"{tmp_path}/o.db") as db:
        db.execute(
            "UPDATE trials SET datetime_start = ? WHERE trial_id = ?",
            (long_ago.isoformat(" "), trial_id(t)),
        )
    assert "no sweep process ever recorded it" in abandoned(storage.get_trial(trial_id(t)), False)


# --------------------------------------------------------------------------- real sweeps


@pytest.mark.slow
def test_a_study_file_from_optuna_2_is_refused_untouched(tmp_path: Path, data_dir: Path) -> None:
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as db:
        db.executescript(FIXTURE.read_text())
    before = (old.read_bytes(), old.stat().st_mtime_ns)
    proc = _run(
        tmp_path,
        data_dir,
        f"hydra.sweeper.storage=sqlite:///{old}",
        "hydra.sweeper.study_name=old",
        "hydra.sweeper.resume=true",
    )
    _one_error_line(proc, str(old), f"optuna storage upgrade --storage sqlite:///{old}")
    assert (old.read_bytes(), old.stat().st_mtime_ns) == before


@pytest.mark.slow
def test_an_unwritable_sweep_folder_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    proc = _run(tmp_path, data_dir, f"hydra.sweep.dir={tmp_path}/a-file/sweep")
    _one_error_line(proc, "hydra.sweep.dir=", "a-file/sweep")


@pytest.mark.slow
def test_a_custom_search_space_that_does_not_import_leaves_no_trial(
    tmp_path: Path, data_dir: Path
) -> None:
    proc = _run(
        tmp_path,
        data_dir,
        "hydra.sweeper.study_name=c",
        "hydra.sweeper.custom_search_space=no_such_module.space",
    )
    _one_error_line(proc, "custom_search_space=no_such_module.space")
    db = tmp_path / "optuna" / "c.db"
    if db.exists():
        trials = optuna.load_study(study_name="c", storage=f"sqlite:///{db}").get_trials()
        assert not [t for t in trials if t.state == TrialState.RUNNING]


def _sigint_as_at_a_terminal() -> None:
    # Started from a shell's background job (`make test &`, nohup), this test and so the sweep
    # inherit SIGINT ignored, and Python then installs no KeyboardInterrupt handler at all.
    # Ctrl-C at a terminal reaches a process whose SIGINT is the default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_joblib_sweep(tmp_path: Path, data_dir: Path) -> tuple[subprocess.Popen, list[dict]]:
    """A 2-worker joblib sweep of long trials, once both trials are training."""
    proc = subprocess.Popen(
        _cmd(
            tmp_path,
            data_dir,
            "hydra.sweeper.study_name=k",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweeper.n_trials=2",
            "trainer.epochs=300",
            "seed=choice(1,2,3)",
        ),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_sigint_as_at_a_terminal,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            trials = _trials(tmp_path)
        except Exception:
            trials = []
        training = [
            t
            for t in trials
            if t.user_attrs.get("run_dir")
            and (Path(t.user_attrs["run_dir"]) / "metrics.csv").exists()
        ]
        if len(training) == 2:
            return proc, [t.user_attrs["job"] for t in training]
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"the trials never started training:\n{proc.communicate()[1][-3000:]}")


def _trials(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(
        study_name="k", storage=f"sqlite:///{tmp_path}/optuna/k.db"
    ).get_trials()


def _wait_gone(jobs: list[dict], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(sweeps.process_alive(j) for j in jobs):
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_a_stopped_joblib_sweep_takes_its_workers_down(
    tmp_path: Path, data_dir: Path, how: str
) -> None:
    """SIGTERM to the sweep, or Ctrl-C (SIGINT to its whole process group): one line, exit
    non-zero, its trials recorded as interrupted, its workers stopped."""
    proc, jobs = _start_joblib_sweep(tmp_path, data_dir)
    if how == "SIGTERM":
        proc.send_signal(signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    proc.stderr = stderr  # type: ignore[assignment]
    _one_error_line(
        subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr),
        f"sweep stopped by {how}",
    )
    assert _wait_gone(jobs), "the sweep's workers kept running"
    trials = _trials(tmp_path)
    assert len(trials) == 2
    for t in trials:
        assert t.state == TrialState.FAIL and t.user_attrs["status"] == Status.INTERRUPTED


@pytest.mark.slow
def test_a_killed_joblib_sweep_takes_its_workers_down(tmp_path: Path, data_dir: Path) -> None:
    """kill -9 of the sweep: its workers notice and stop (recording themselves interrupted);
    a resume then settles both trials from their run folders."""
    proc, jobs = _start_joblib_sweep(tmp_path, data_dir)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)  # its workers may hold its stdout open: no communicate()
    assert _wait_gone(jobs), "the killed sweep's workers kept running"
    assert all(t.state == TrialState.RUNNING for t in _trials(tmp_path))
    for t in _trials(tmp_path):
        summary = json.loads((Path(t.user_attrs["run_dir"]) / SUMMARY_FILE).read_text())
        assert summary["status"] == Status.INTERRUPTED
    resumed = _run(
        tmp_path,
        data_dir,
        "hydra.sweeper.study_name=k",
        "hydra.sweeper.resume=true",
        "hydra.sweeper.n_trials=0",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for t in _trials(tmp_path):
        assert t.state == TrialState.FAIL and t.user_attrs["status"] == Status.INTERRUPTED


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 256 KiB tmpfs filled to the last byte (needs root; skipped elsewhere)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with open(mnt / "filler", "wb", buffering=0) as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 4096)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_under_the_sweep_folder_is_one_line(
    tmp_path: Path, data_dir: Path, full_disk: Path
) -> None:
    proc = _run(
        tmp_path, data_dir, "hydra.sweeper.study_name=f", f"hydra.sweep.dir={full_disk}/sweep"
    )
    _one_error_line(proc, "hydra.sweep.dir=", "No space left on device")
    db = tmp_path / "optuna" / "f.db"
    if db.exists():
        trials = optuna.load_study(study_name="f", storage=f"sqlite:///{db}").get_trials()
        assert not [t for t in trials if t.state == TrialState.RUNNING]
