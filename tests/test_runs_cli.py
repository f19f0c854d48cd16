"""Run folders through the real CLI: never shared, and a folder that cannot be written (read-only,
full disk) or an optimizer that is not one ends with one line and loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
FAST = ("data=mnist_sample", "trainer.progress=false", "model.hidden_size=8", "data.batch_size=512")

pytestmark = pytest.mark.slow


def coarse(key: str) -> str:
    """conf/hydra/default.yaml's folder for `key` with an hour instead of a second in its name,
    so that runs started together surely ask for the same folder."""
    section, name = key.split(".")
    value = yaml.safe_load((REPO / "conf/hydra/default.yaml").read_text())[section][name]
    assert "%H-%M-%S" in value
    return f"hydra.{key}='{value.replace('%H-%M-%S', '%H')}'"


def start(*args: str, data_dir: Path, root: Path) -> subprocess.Popen:
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.Popen(
        [sys.executable, "train.py", *flags, f"paths.data_dir={data_dir}",
         f"paths.root_dir={root}", *overrides],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"},
    )  # fmt: skip


def finish(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]


def assert_intact_run(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["config"]["paths.output_dir"] == str(run_dir)
    log = (run_dir / "train.log").read_text()
    assert log.count("completed: objective") == 1 and log.count("epoch 1/1") == 1


def test_four_runs_started_together_get_four_folders(data_dir, tmp_path):
    procs = [
        start(*FAST, "trainer.epochs=1", coarse("run.dir"), data_dir=data_dir, root=tmp_path)
        for _ in range(4)
    ]
    finish(procs)
    day = next((tmp_path / "outputs" / "runs").iterdir())
    folders = sorted(day.iterdir())
    assert len(folders) == 4, folders
    for folder in folders:
        assert_intact_run(folder)


def test_four_multiruns_started_together_get_four_sweep_dirs(data_dir, tmp_path):
    procs = [
        start("-m", *FAST, "trainer.epochs=1", coarse("sweep.dir"), data_dir=data_dir,
              root=tmp_path)
        for _ in range(4)
    ]  # fmt: skip
    finish(procs)
    day = next((tmp_path / "outputs" / "multirun").iterdir())
    sweeps = sorted(day.iterdir())
    assert len(sweeps) == 4, sweeps
    for sweep in sweeps:
        assert (sweep / "multirun.yaml").is_file()
        assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0"]
        assert_intact_run(sweep / "0")
    # nothing else was created (a single-run folder resolved by accident, say)
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["multirun"]


def test_optimizer_target_that_is_not_an_optimizer_is_one_line(run_train, tmp_path):
    proc = run_train(*FAST, "optimizer._target_=torch.nn.Linear", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("rnnlab: error: optimizer._target_=torch.nn.Linear")
    assert "Traceback" not in proc.stderr and "Error in call to target" not in proc.stderr


@pytest.fixture
def tmpfs(tmp_path):
    """A small tmpfs mounted at a fresh folder (needs root, as in CI here)."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-R", "-l", str(mnt)], check=False)


def test_read_only_run_folder_is_one_line(run_train, tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    proc = run_train(*FAST, f"hydra.run.dir={tmpfs}/run")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        f"rnnlab: error: hydra.run.dir={tmpfs}/run: cannot write the output folder: "
        "Read-only file system"
    )
    assert "Traceback" not in proc.stderr
    proc = run_train("-m", *FAST, f"hydra.sweep.dir={tmpfs}/sweep")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"rnnlab: error: hydra.sweep.dir={tmpfs}/sweep: cannot write the output folder: "
        "Read-only file system"
    )


def test_full_disk_at_the_start_is_one_line(run_train, tmpfs):
    subprocess.run(["dd", "if=/dev/zero", f"of={tmpfs}/filler", "bs=64k"], capture_output=True)
    proc = run_train(*FAST, f"hydra.run.dir={tmpfs}/run")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"rnnlab: error: hydra.run.dir={tmpfs}/run: cannot write the output folder: "
            "No space left on device"
        )
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.05)


@pytest.mark.parametrize("damage", ["disk full", "read-only"])
def test_run_folder_that_fills_up_or_turns_read_only_is_one_line(data_dir, tmpfs, damage):
    run_dir = tmpfs / "run"
    proc = start(*FAST, "model=gru", "trainer.epochs=4", f"hydra.run.dir={run_dir}",
                 data_dir=data_dir, root=tmpfs)  # fmt: skip
    wait_for(run_dir / "metrics.csv", proc)
    before = (run_dir / "metrics.csv").read_text()
    if damage == "disk full":
        subprocess.run(["dd", "if=/dev/zero", f"of={tmpfs}/filler", "bs=64k"],
                       capture_output=True)  # fmt: skip
    else:  # the checkpoints folder (train.log, open for writing, keeps the rest busy)
        ckpt = str(run_dir / "checkpoints")
        subprocess.run(["mount", "--bind", ckpt, ckpt], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", ckpt], check=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-2000:]
    last = err.strip().splitlines()[-1]
    expected = "No space left on device" if damage == "disk full" else "Read-only file system"
    assert last.startswith("rnnlab: error: ") and expected in last, err[-2000:]
    assert "Traceback" not in err and "Logging error" not in err
    # what was written before is intact: the metrics of epoch 1 and a loadable last.pt
    rows = (run_dir / "metrics.csv").read_text()
    assert rows.startswith(before.splitlines()[0]) and len(rows.splitlines()) >= 2
    ckpt = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    assert ckpt["epoch"] == len(rows.splitlines()) - 1
    assert not [p for p in run_dir.rglob(".*.tmp")]
