"""The run-folder contract in rnnlab.runs and rnnlab.rundirs, without training anything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rnnlab import runs
from rnnlab.errors import ConfigError
from rnnlab.optim import build_optimizer, fused_kernel_devices, optimizer_class
from rnnlab.rundirs import unique_dir
from rnnlab.runs import Direction, Status, Summary

REPO = Path(__file__).resolve().parents[1]


def test_unique_dir_gives_each_process_its_own_folder(tmp_path):
    base = tmp_path / "runs" / "2026-11-28" / "10-00-00"
    code = "import sys; from rnnlab.rundirs import unique_dir; print(unique_dir(sys.argv[1]))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(base)], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    folders = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(folders)) == 4, folders
    assert sorted(Path(f).name for f in folders) == [
        "10-00-00",
        "10-00-00_1",
        "10-00-00_2",
        "10-00-00_3",
    ]


def test_unique_dir_is_the_same_folder_every_time_in_one_process(tmp_path):
    base = str(tmp_path / "10-00-00")
    (tmp_path / "10-00-00").mkdir()  # taken by an earlier run
    first = unique_dir(base)
    assert first == str(tmp_path / "10-00-00_1")
    assert unique_dir(base) == first and unique_dir(base) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["10-00-00", "10-00-00_1"]


def test_summary_v2_records_config_and_choices_but_not_the_trial():
    config = {
        "model": {"cell": "lstm", "hidden_size": 128},
        "optimizer": {"_target_": "torch.optim.AdamW", "lr": 1e-3, "betas": [0.9, 0.99]},
        "scheduler": None,
        "seed": 0,
        "optimized_metric": "val/loss",
        "trial": {"storage": "postgresql://u:secret@host/db", "number": 3},
    }
    choices = {"model": "lstm", "experiment": None, "hydra/launcher": "basic", "hydra": "x"}
    s = Summary.start(config, choices, command="train.py")
    assert s.schema_version == runs.SCHEMA_VERSION == 2
    assert s.objective_mode is Direction.MIN and s.status is Status.RUNNING
    s.status = Status.COMPLETED
    rows = [
        {"epoch": 1, "val_loss": 0.5, "val_acc": 0.8, "test_loss": 0.6, "test_acc": 0.7,
         "train_samples_per_s": 100.0},
        {"epoch": 2, "val_loss": 0.4, "val_acc": 0.85, "test_loss": 0.5, "test_acc": 0.75,
         "train_samples_per_s": 300.0},
    ]  # fmt: skip
    s.conclude(rows, rows[1])
    d = json.loads(json.dumps(s.to_dict()))
    assert tuple(d) == runs.SUMMARY_FIELDS
    assert d["status"] == "completed" and d["objective"] == 0.4 and d["best_epoch"] == 2
    assert d["train_samples_per_s"] == 200.0 and d["epochs_completed"] == 2
    assert d["config"] == {
        "model.cell": "lstm",
        "model.hidden_size": 128,
        "optimizer._target_": "torch.optim.AdamW",
        "optimizer.lr": 1e-3,
        "optimizer.betas": [0.9, 0.99],
        "scheduler": None,
        "seed": 0,
        "optimized_metric": "val/loss",
    }
    assert d["choices"] == {"model": "lstm", "experiment": None}
    assert "secret" not in json.dumps(d)


def test_a_run_without_epochs_records_the_worst_objective():
    s = Summary.start({"optimized_metric": "val/acc", "seed": 1}, {})
    s.conclude([], None)
    assert s.status is Status.FAILED and s.objective == Direction.MAX.worst
    assert s.best_epoch is None and s.epochs_completed == 0


def test_stale_temp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".last.pt.{dead_pid}.a1b2c3.tmp"
    live = tmp_path / f".last.pt.{os.getpid()}.d4e5f6.tmp"  # this process, writing now
    old_style = tmp_path / ".metrics.csv.x7y8z9.tmp"
    kept = tmp_path / "last.pt"
    for p in (stale, live, old_style, kept):
        p.write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    os.utime(old_style, (two_hours_ago, two_hours_ago))
    removed = runs.remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([stale, old_style])
    assert live.exists() and kept.exists() and not stale.exists()


def test_atomic_write_names_its_temp_file_after_the_writer(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    runs.atomic_write(tmp_path / "summary.json", "{}")
    assert seen[0].startswith(f".summary.json.{os.getpid()}.") and seen[0].endswith(".tmp")


def test_fused_kernel_devices_really_step_fused():
    """The seam over torch's private list: each device type it names runs fused=True."""
    devices = fused_kernel_devices()
    assert "cuda" in devices
    local = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in (d for d in local if d in devices):
        p = torch.nn.Parameter(torch.ones(3, device=device))
        opt = torch.optim.Adam([p], lr=0.1, fused=True)
        p.grad = torch.ones_like(p)
        opt.step()
        assert torch.all(p < 1)


@pytest.mark.parametrize(
    "target", ["torch.nn.Linear", "os.system", "no.such.Optimizer", "torch.optim"]
)
def test_an_optimizer_target_that_is_not_an_optimizer_is_refused(target):
    with pytest.raises(ConfigError) as e:
        optimizer_class(target)
    assert f"optimizer._target_={target}" in str(e.value)
    assert "torch.optim.Optimizer" in str(e.value)


def test_known_optimizers_build_fused_where_torch_has_kernels():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "fused": None}
    )
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg, model.parameters(), torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["fused"] is ("cpu" in fused_kernel_devices() or None)
