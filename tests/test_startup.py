"""A training process imports only what it uses, when it uses it (start-up time).

Behaviour, not timings: which heavy libraries a fresh `train.py` has imported by its first
training step (seen through torch's public optimizer step hook, as benchmarks/startup.py
does), and that optimizers no longer import torch._dynamo (rnnlab.dynamo_seam) while they
step exactly as torch's own do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sweeping import TINY_TRIAL, sweep_env

REPO = Path(__file__).resolve().parents[1]
NEVER_BEFORE_FIRST_STEP = (
    "torch._dynamo",
    "matplotlib",
    "torchvision",
    "rich",
    "scipy",
    "sklearn",
    "pandas",
)
STORAGE_ONLY = ("optuna", "sqlalchemy", "alembic")

# train.py with a hook on the first optimizer step that records sys.modules then and at exit.
PROBE = """
import atexit, json, os, runpy, sys
from torch.optim.optimizer import register_optimizer_step_pre_hook
seen = {}
def first_step(*_):
    if "first_step" not in seen:
        seen["first_step"] = sorted(sys.modules)
register_optimizer_step_pre_hook(first_step)
def at_exit():
    seen["exit"] = sorted(sys.modules)
    with open(os.environ["STARTUP_PROBE_OUT"], "w") as f:
        json.dump(seen, f)
atexit.register(at_exit)
sys.argv = ["train.py", *sys.argv[1:]]
runpy.run_path("train.py", run_name="__main__")
"""


def probe_run(tmp_path: Path, data_dir: Path, *overrides: str) -> dict[str, set[str]]:
    out = tmp_path / "modules.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            PROBE,
            *TINY_TRIAL,
            f"paths.data_dir={data_dir}",
            f"paths.output_root={tmp_path}/out",
            *overrides,
        ],
        cwd=REPO,
        env=sweep_env(STARTUP_PROBE_OUT=str(out)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {k: set(v) for k, v in json.loads(out.read_text()).items()}


@pytest.mark.slow
def test_a_plain_run_imports_no_storage_compiler_or_plotting_before_its_first_step(
    tmp_path: Path, data_dir: Path
) -> None:
    modules = probe_run(tmp_path, data_dir)
    early = modules["first_step"]
    assert "torch" in early and "rnnlab.training" in early  # the probe saw the real run
    assert [m for m in (*NEVER_BEFORE_FIRST_STEP, *STORAGE_ONLY) if m in early] == []
    # curves.png is written at the end, with matplotlib imported for it then.
    assert "matplotlib" in modules["exit"]
    assert [m for m in ("torch._dynamo", *STORAGE_ONLY) if m in modules["exit"]] == []


@pytest.mark.slow
def test_a_trial_imports_optuna_and_its_storage_but_no_compiler(
    tmp_path: Path, data_dir: Path
) -> None:
    import optuna

    url = f"sqlite:///{tmp_path}/study.db"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    trial = study.ask()
    trial.set_user_attr("pruner", {"_target_": "optuna.pruners.MedianPruner"})
    modules = probe_run(
        tmp_path,
        data_dir,
        f"trial={{study_name:s,number:{trial.number},trial_id:{trial._trial_id},storage:'{url}'}}",
    )
    early = modules["first_step"]
    assert [m for m in STORAGE_ONLY if m not in early] == []  # it reports to its study
    assert [m for m in NEVER_BEFORE_FIRST_STEP if m in early] == []
    assert "torch._dynamo" not in modules["exit"]
    # ... and it did report: the epoch's value is on the trial.
    assert study.trials[0].intermediate_values.keys() == {1}


# Steps with rnnlab's optimizer (the seam on) before torch._dynamo is imported, then again from
# the same start after importing it (torch's own wrappers then): the same numbers, the same
# hooks, and torch.compile works afterwards.
SEAM = """
import json, sys, torch
from omegaconf import OmegaConf
from torch.optim.optimizer import register_optimizer_step_pre_hook
from rnnlab.optim import build_optimizer, build_scheduler

def train(target):
    torch.manual_seed(0)
    model = torch.nn.GRU(28, 16, batch_first=True)
    opt = build_optimizer(OmegaConf.create({"_target_": target, "_partial_": True, "lr": 0.01}),
                          model.parameters(), torch.device("cpu"))
    sched = build_scheduler(OmegaConf.create(
        {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True,
         "T_max": 3}), opt)
    for _ in range(3):
        loss = model(torch.randn(8, 28, 28))[0].square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    opt.load_state_dict(opt.state_dict())
    assert torch.is_grad_enabled()
    return [p.detach().flatten().tolist() for p in model.parameters()], opt.defaults

steps = []
register_optimizer_step_pre_hook(lambda *a: steps.append(1))
out = {}
for target in ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"):
    before, defaults = train(target)
    out[target] = {"fused": defaults.get("fused"), "dynamo": "torch._dynamo" in sys.modules}
    out[target]["before"] = before
import torch._dynamo
compiled = torch.compile(lambda x: x * 2 + 1, backend="eager")
out["compiled"] = compiled(torch.ones(2)).tolist()
for target in ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"):
    out[target]["same_after_import"] = train(target)[0] == out[target].pop("before")
out["hooked_steps"] = len(steps)
print(json.dumps(out))
"""


def test_optimizers_step_without_importing_dynamo_and_as_torch_does() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SEAM],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for target in ("torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"):
        assert out[target] == {"fused": True, "dynamo": False, "same_after_import": True}
    assert out["compiled"] == [3.0, 3.0]
    assert out["hooked_steps"] == 18  # 3 optimizers x 3 steps, before and after the import


def test_the_seam_leaves_an_optimizer_it_does_not_know_alone() -> None:
    import torch

    from rnnlab.dynamo_seam import defer_dynamo

    class Plain(torch.optim.Optimizer):
        def __init__(self, params) -> None:
            super().__init__(params, {"lr": 0.1, "differentiable": False})

        def step(self, closure=None):  # not wrapped by torch: nothing to take over
            for group in self.param_groups:
                for p in group["params"]:
                    p.data.add_(p.grad, alpha=-group["lr"])

    step = Plain.step
    assert defer_dynamo(Plain) is False
    assert Plain.step is step
    assert defer_dynamo(torch.optim.Adam) is True
    assert defer_dynamo(torch.optim.Adam) is True  # idempotent
