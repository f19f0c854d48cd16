"""Sweeps on a real Slurm cluster: `hydra/launcher=slurm`, each trial a Slurm job.

The cluster is the one `scripts/slurm-local.sh` brings up (slurmctld, slurmd, slurmdbd with
real accounting on a private MariaDB), in a temp dir and on ports of its own, so it runs beside
a cluster a developer already has up. The tests skip, with the reason, where it cannot be
brought up (no root, no packages and no apt-get).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from rnnlab import runs, slurm

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
# Trials as 1-CPU jobs of 1 GB: the 2-core node runs two at once.
JOB = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.setup=null",
]
TINY = [
    "hparams_search=rnn_optuna",
    "data=mnist_sample",
    "data.val_size=400",
    "data.test_size=4100",
    "model.hidden_size=choice(8)",
    "trainer.progress=false",
]


def _free_port_block() -> int:
    """A port p with p, p+1 and p+2 free on this host (slurmctld, slurmd, slurmdbd)."""
    for base in range(17817, 27817, 10):
        try:
            for port in range(base, base + 3):
                with socket.socket() as s:
                    s.bind(("", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port block for the test cluster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs root (slurmd runs jobs as any user)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("Slurm is not installed and there is no apt-get to install it")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    state = tmp_path_factory.mktemp("slurm")
    env = dict(
        os.environ,
        RNNLAB_SLURM_DIR=str(state / "cluster"),
        RNNLAB_SLURM_PORT=str(_free_port_block()),
    )
    up = subprocess.run(
        ["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=600
    )
    if up.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)
        pytest.fail(f"slurm-local.sh up failed:\n{up.stdout}\n{up.stderr}")
    env["SLURM_CONF"] = str(state / "cluster" / "slurm.conf")
    try:
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, timeout=120)


def _sweep(cluster: dict, out: Path, *args: str, timeout: float = 400) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            f"paths.output_root={out}",
            f"paths.data_dir={out.parent / 'data'}",
            f"hydra.sweep.dir={out / 'sweep'}",
            *JOB,
            *TINY,
            *args,
        ],
        cwd=out,
        env=dict(cluster, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 400, ok: bool = True) -> str:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError(f"the sweep hung:\n{output[-4000:]}") from None
    assert (proc.returncode == 0) == ok, f"sweep exited {proc.returncode}:\n{output[-4000:]}"
    return output


def _sacct(cluster: dict) -> dict[str, str]:
    out = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-o", "JobID,State"],
        env=cluster,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("|", 1) for line in out.split())


def _trials(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / runs.TRIALS_FILE, newline="") as f:
        return list(csv.DictReader(f))


def test_four_trial_sweep_runs_each_trial_as_a_slurm_job(cluster: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _sweep(
        cluster,
        out,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "trainer.epochs=1",
    )
    output = _finish(proc)
    sweep_dir = out / "sweep"

    study = optuna.load_study(
        study_name="rnn_optuna", storage=f"sqlite:///{out}/optuna/rnn_optuna.db"
    )
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4

    # Each trial ran as its own Slurm job, recorded in its run dir and its trial.
    job_ids = set()
    for t in study.trials:
        run_dir = Path(t.user_attrs["run_dir"])
        summary = json.loads((run_dir / runs.SUMMARY_FILE).read_text())
        assert summary["status"] == runs.Status.COMPLETED
        assert (run_dir / runs.METRICS_FILE).is_file() and (run_dir / runs.CURVES_FILE).is_file()
        assert summary["slurm_job_id"] == t.user_attrs["job"]["slurm_job_id"]
        # The job's torch threads follow its --cpus-per-task.
        assert summary["torch_threads"] == 1
        job_ids.add(summary["slurm_job_id"])
    assert len(job_ids) == 4
    assert {p.name for p in (sweep_dir / ".submitit").iterdir() if p.is_dir()} == job_ids
    # Accounting records a job's end a moment after its result is in.
    _wait(
        "the jobs' end in accounting",
        lambda: all(_sacct(cluster)[j] == "COMPLETED" for j in job_ids),
    )

    # The end-of-sweep table and the sweep's files.
    assert "top 4 of 4 runs" in output
    assert (sweep_dir / runs.SWEEP_SUMMARY_FILE).is_file()
    assert [r["status"] for r in _trials(sweep_dir)] == [runs.Status.COMPLETED] * 4


def _wait(what: str, check, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _running_jobs(cluster: dict) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", "-t", "RUNNING", "-o", "%i"],
        env=cluster,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(out.split(), key=int)


def _trial_pids(cluster: dict, job: str) -> list[int]:
    """The trial's Python process(es) inside Slurm job `job` (submitit's job runner)."""
    listing = subprocess.run(
        ["scontrol", "listpids", job], env=cluster, capture_output=True, text=True
    ).stdout
    pids = []
    for line in listing.splitlines()[1:]:
        pid = line.split()[0]
        try:
            if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(int(pid))
        except (OSError, ValueError):
            continue
    return pids


def _kill_job_process(cluster: dict, job: str) -> None:
    """kill -9 the trial's Python process inside Slurm job `job` (as the OOM killer would)."""
    for pid in _wait(f"the trial process of job {job}", lambda: _trial_pids(cluster, job)):
        os.kill(pid, 9)


def test_cancelled_killed_and_timed_out_jobs_are_recorded(cluster: dict, tmp_path: Path) -> None:
    """scancel, a job whose process is killed, and a job at its time limit: each trial is
    recorded as interrupted or failed with the reason, the sweep goes on and ends."""
    out = tmp_path / "out"
    proc = _sweep(
        cluster,
        out,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
        "trainer.epochs=100000",
        # submitit signals a job signal_delay_s before its time limit and, since the launcher
        # may not requeue it, ends it there: 1 minute, signalled after 25 s.
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=35",
    )
    try:
        jobs = _wait(
            "two running jobs", lambda: j if len(j := _running_jobs(cluster)) >= 2 else None
        )
        first, second = jobs[:2]
        time.sleep(5)  # let both jobs get into training
        subprocess.run(["scancel", first], env=cluster, check=True)
        _kill_job_process(cluster, second)
        # No trial succeeded, so the sweep ends non-zero (as upstream's), having run them all.
        output = _finish(proc, timeout=400, ok=False)
    finally:
        if proc.poll() is None:
            proc.kill()
    trials = {int(r["number"]): r for r in _trials(out / "sweep")}
    assert len(trials) == 3
    reasons = {r["reason"] for r in trials.values()}
    assert f"cancelled by Slurm (job {first})" in reasons, reasons
    assert any(r.startswith("the job failed") and f"job {second}" in r for r in reasons), reasons
    assert any(r.startswith("time limit") for r in reasons), reasons
    assert all(r["state"] == "FAIL" for r in trials.values())
    assert "rnnlab: error: none of this sweep's 3 trials succeeded" in output, output[-2000:]
    # Nothing left behind: the time-limited job ends at its limit at the latest.
    _wait("the queue to empty", lambda: _running_jobs(cluster) == [], timeout=120)


def test_job_id_and_cpus_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert slurm.job_id() == "42" and slurm.cpus_per_task() == 3
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert slurm.job_id() == "40_2"
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "x")
    assert slurm.cpus_per_task() is None
    assert slurm.launcher_error_reason("Job not requeued because: timed-out too many times.") == (
        "time limit"
    )
