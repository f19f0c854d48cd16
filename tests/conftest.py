"""Shared fixtures: the repo root, a data dir shared by the session, and a train.py runner."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One paths.data_dir for the session, so the decoded mnist_sample cache is reused."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def run_train(data_dir: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run the real CLI: `python train.py <args>` from the repo root, offline."""

    def run(*args: str, timeout: float = 240, check: bool = False) -> subprocess.CompletedProcess:
        # argparse wants flags such as -m before the overrides
        flags = [a for a in args if a.startswith("-")]
        overrides = [a for a in args if not a.startswith("-")]
        env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, "train.py", *flags, f"paths.data_dir={data_dir}", *overrides],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"train.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run


@pytest.fixture(scope="session")
def rnn_gru_multirun(tmp_path_factory: pytest.TempPathFactory, data_dir: Path):
    """One real 2-job multirun (`-m model=rnn,gru`, 1 epoch), shared by the tests that read it."""
    sweep_dir = tmp_path_factory.mktemp("multirun") / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "data=mnist_sample",
            "trainer.progress=false",
            "model=rnn,gru",
            "trainer.epochs=1",
            "model.hidden_size=32",
            f"paths.data_dir={data_dir}",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir, proc
