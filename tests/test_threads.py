"""The thread policy (rnnlab.threads): the number of torch threads a run picks, and why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rnnlab import threads

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_an_explicit_setting_wins():
    assert threads.choose(cfg("trainer.num_threads=3"), CPU) == (3, "trainer.num_threads")


def test_step_size_counts_gates_width_and_batch():
    assert threads.step_macs(cfg("model=rnn")) == 64 * 128 * 128
    assert threads.step_macs(cfg("model=lstm", "data.batch_size=128")) == 128 * 4 * 128 * 128
    assert threads.step_macs(cfg("model=gru", "model.bidirectional=true")) == 64 * 3 * 128**2 * 2


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_small_steps_get_one_thread_large_ones_every_cpu():
    cpus = len(os.sched_getaffinity(0))
    n, why = threads.choose(cfg("model=rnn"), CPU)  # the textbook model
    assert n == 1 and "small step" in why
    big = cfg("model=lstm", "model.hidden_size=512", "data.batch_size=256")
    assert threads.choose(big, CPU) == (cpus, f"{cpus} cpus")


def test_the_affinity_mask_bounds_the_share():
    """A process pinned to one CPU (as Slurm or taskset would) takes one thread, however big."""
    code = (
        "import torch; from tests.test_threads import cfg; from rnnlab import threads;"
        "big = cfg('model=lstm', 'model.hidden_size=512', 'data.batch_size=256');"
        "print(threads.choose(big, torch.device('cpu')))"
    )
    out = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "(1, '1 cpus')"


def test_omp_threads_sleep_while_waiting_unless_the_user_says_otherwise():
    code = "import os, rnnlab; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.stdout.strip() == "ACTIVE"


@pytest.mark.slow
def test_parallel_jobs_of_a_plain_multirun_share_the_cpus(run_train, tmp_path):
    """`-m` with the joblib launcher (Hydra's basic sweeper): each job takes its share."""
    from tests.sweeping import TINY_TRIAL

    proc = run_train(
        "-m",
        *TINY_TRIAL,
        "model=lstm,gru",
        "model.hidden_size=512",  # big enough that alone it would take every CPU
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={tmp_path}",
        check=True,
    )
    cpus = len(os.sched_getaffinity(0))
    for job in ("0", "1"):
        summary = json.loads((tmp_path / job / "summary.json").read_text())
        assert summary["torch_threads"] == max(1, cpus // 2), proc.stdout
        assert summary["torch_threads_why"] == f"{cpus} cpus / 2 parallel trials"


def test_launcher_parallelism_follows_joblib():
    cpus = threads.available_cpus()
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert threads.launcher_parallelism({"_target_": "hydra._internal.BasicLauncher"}) == 1
    assert threads.launcher_parallelism({"_target_": joblib, "n_jobs": 3}) == 3
    assert threads.launcher_parallelism({"_target_": joblib, "n_jobs": -1}) == cpus
    assert threads.launcher_parallelism({"_target_": joblib, "n_jobs": -2}) == max(1, cpus - 1)
    with pytest.raises(ValueError, match="n_jobs=0"):
        threads.launcher_parallelism({"_target_": joblib, "n_jobs": 0})


@pytest.mark.slow
def test_a_sweep_with_zero_joblib_jobs_is_refused_before_any_trial(run_train, tmp_path):
    proc = run_train(
        "-m",
        "hparams_search=rnn_optuna",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=0",
        f"hydra.sweep.dir={tmp_path}/sweep",
        f"paths.output_root={tmp_path}",
    )
    assert proc.returncode != 0
    assert "hydra.launcher.n_jobs=0: expected >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "optuna").exists()  # no study, no trial
