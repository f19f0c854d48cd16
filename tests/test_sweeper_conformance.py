"""rnnlab_optuna on a plain Hydra app, as a new user would try it: upstream's documented
behaviour (hydra-optuna-sweeper), in our own words and tests.

The app is a function of x and y with no rnnlab keys (no `trial`, no `trainer`); each test
runs it as a real `python app.py -m ...` in a temporary folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from rnnlab import secrets

pytestmark = pytest.mark.slow

APP = """
import json, os, sys
import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg: DictConfig):
    if cfg.get("fail"):
        raise ValueError("boom: this app always fails")
    value = (cfg.x - 1) ** 2 + (cfg.y + 2) ** 2
    if cfg.get("two"):
        return value, abs(cfg.x)
    return value


if __name__ == "__main__":
    argv, env = list(sys.argv), dict(os.environ)
    main()
    changed = sorted(k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k))
    print("RESTORED", json.dumps({"argv": sys.argv == argv, "env": changed}))
"""

CONFIG = {
    "defaults": ["_self_", {"override hydra/sweeper": "rnnlab_optuna"}],
    "x": 0.0,
    "y": 0.0,
    "hydra": {
        "sweep": {"dir": "multirun", "subdir": "${hydra.job.num}"},
        "sweeper": {
            "study_name": "plain",
            "n_trials": 3,
            "sampler": {"seed": 1},
            "params": {"x": "interval(-3, 3)", "y": "interval(-3, 3)"},
        },
    },
}


@pytest.fixture
def app(tmp_path: Path):
    """Write the app and its config; return a runner of `python app.py -m <args>`."""
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))

    def run(*args: str, ok: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "app.py", "-m", *args],
            cwd=tmp_path,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            capture_output=True,
            text=True,
            timeout=240,
        )
        if ok and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr}")
        return proc

    return run


def _study(tmp_path: Path, name: str = "plain") -> optuna.Study:
    return optuna.load_study(
        study_name=name, storage=f"sqlite:///{tmp_path}/outputs/optuna/{name}.db"
    )


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("rnnlab: error:")]
    for needle in needles:
        assert needle in line, line
    return line


def test_plain_app_with_a_parallel_launcher(app, tmp_path: Path) -> None:
    """Trials complete, the default direction is minimize, no rnnlab-only override reaches
    the jobs, and the calling process gets its argv and environment back."""
    proc = app("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    s = _study(tmp_path)
    assert s.direction == optuna.study.StudyDirection.MINIMIZE
    trials = s.get_trials()
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for job in (tmp_path / "multirun").glob("[0-9]*"):
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert not [o for o in overrides if o.startswith(("trial=", "trainer."))], overrides
    restored = json.loads(proc.stdout.split("RESTORED", 1)[1])
    assert restored == {"argv": True, "env": []}
    assert secrets.STORAGE_ENV not in proc.stdout


def test_sweep_subdir_interpolation_is_left_for_hydra(app, tmp_path: Path) -> None:
    app("hydra.sweep.subdir=${hydra.job.override_dirname}")
    names = sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.is_dir())
    assert len(names) == 3
    assert all(n.startswith("x=") and ",y=" in n for n in names), names


def test_multi_objective_study_lists_the_pareto_front(app, tmp_path: Path) -> None:
    app(
        "+two=true",
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.direction=[minimize,minimize]",
    )
    s = _study(tmp_path)
    assert len(s.directions) == 2
    trials = s.get_trials()
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in trials)
    results = yaml.safe_load((tmp_path / "multirun" / "optimization_results.yaml").read_text())
    front = {entry["number"] for entry in results["best_trials"]}
    assert front == {t.number for t in s.best_trials}
    assert all(len(entry["values"]) == 2 for entry in results["best_trials"])


def test_max_failure_rate_stops_the_sweep_with_the_error_shown(app, tmp_path: Path) -> None:
    proc = app("+fail=true", "hydra.sweeper.max_failure_rate=0.5", ok=False)
    _one_error_line(proc, "max_failure_rate=0.5", "boom: this app always fails")
    assert len(_study(tmp_path).get_trials()) == 1  # stopped after the first failure


def test_a_sweep_whose_trials_all_fail_exits_non_zero(app, tmp_path: Path) -> None:
    proc = app("+fail=true", ok=False)
    _one_error_line(proc, "none of this sweep's 3 trials succeeded", "boom")


def test_jobs_that_cannot_start_fail_the_sweep_with_the_error_shown(app, tmp_path: Path) -> None:
    proc = app("hydra.sweep.subdir=${no_such_key}", ok=False)
    _one_error_line(proc, "none of this sweep's", "no_such_key")


def test_deprecated_search_space_key_still_works(app, tmp_path: Path) -> None:
    config = dict(CONFIG, hydra={**CONFIG["hydra"]})
    sweeper = dict(config["hydra"]["sweeper"])
    sweeper["search_space"] = sweeper.pop("params")
    config["hydra"]["sweeper"] = sweeper
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = app()
    assert "search_space is deprecated" in proc.stderr + proc.stdout
    trials = _study(tmp_path).get_trials()
    assert all(set(t.params) == {"x", "y"} for t in trials)


def test_custom_search_space_redefining_a_fixed_parameter_is_refused(app, tmp_path: Path) -> None:
    (tmp_path / "space.py").write_text(
        "def extend(cfg, trial):\n    trial.suggest_float('x', 0, 1)\n"
    )
    proc = app(
        "x=2",
        "hydra.sweeper.custom_search_space=space.extend",
        ok=False,
        env={"PYTHONPATH": str(tmp_path)},
    )
    _one_error_line(proc, "custom_search_space=space.extend", "x")
    assert all(t.state != TrialState.RUNNING for t in _study(tmp_path).get_trials())
