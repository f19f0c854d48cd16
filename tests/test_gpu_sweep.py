"""benchmarks/gpu_sweep.py runs: its CPU smoke mode end to end, and its refusal without CUDA."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_sweep.py"


@pytest.mark.slow
def test_quick_cpu_mode_measures_both_parts(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--out", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "gpu_sweep.json").read_text())
    modes = {r["mode"]: r for r in results["speed"]}
    assert set(modes) == {"eager", "graphs", "bf16"}
    assert all(r["samples_per_s"] > 0 and r["epoch_s"] > 0 for r in modes.values())
    # On CPU the graphs mode is the eager step, with the reason said.
    assert modes["graphs"]["graphs"] is False and "CUDA" in modes["graphs"]["fallback"]
    assert modes["graphs"]["final_loss"] == modes["eager"]["final_loss"]
    sweep = results["sweep"]
    assert [r["n_jobs"] for r in sweep] == [1, 2]
    assert all(r["trials"] == 2 and r["statuses"] == ["completed"] for r in sweep)
    assert all(r["trials_per_hour"] > 0 for r in sweep)
    assert "trials/hour" in proc.stdout and "samples/s" in proc.stdout


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_refuses_in_one_line_without_cuda():
    proc = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stdout.strip().splitlines() == [
        "gpu_sweep: no CUDA device here; run it on a GPU machine or use --device cpu"
    ]
    assert proc.stderr == ""
