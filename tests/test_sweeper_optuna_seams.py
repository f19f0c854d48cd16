"""The optuna API the sweeper relies on beyond the obvious: if optuna changes any of it, these
fail loudly (rather than sweeps quietly losing trials)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution

from hydra_plugins.rnnlab_sweeper._optuna_seams import study_id, trial_id
from hydra_plugins.rnnlab_sweeper._samplers import PerTrialSampler, build_sampler
from hydra_plugins.rnnlab_sweeper.config import SAMPLERS
from rnnlab.storage import STALE_AFTER_S, open_storage, stale_trial_ids

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_private_ids_match_the_storage(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")
    study = optuna.create_study(study_name="s", storage=storage)
    assert study_id(study) == storage.get_study_id_from_name("s")
    study.ask()
    trial = study.ask()
    assert storage.get_trial(trial_id(trial)).number == trial.number == 1
    assert trial_id(storage.get_trial(trial_id(trial))) == trial_id(trial)


def test_stale_trial_ids_finds_trials_whose_heartbeat_stopped(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/h.db")
    study = optuna.create_study(study_name="h", storage=storage)
    old, fresh, silent = study.ask(), study.ask(), study.ask()
    for t in (old, fresh):
        storage.record_heartbeat(trial_id(t))
    with sqlite3.connect(f"{tmp_path}/h.db") as db:
        db.execute(
            "UPDATE trial_heartbeats SET heartbeat = datetime('now', ?) WHERE trial_id = ?",
            (f"-{STALE_AFTER_S + 60} seconds", trial_id(old)),
        )
    assert stale_trial_ids(storage, study_id(study)) == {trial_id(old)}
    assert silent.number == 2  # never beat: not stale


def test_study_ask_tells_the_sampler_its_trial_before_sampling(tmp_path: Path) -> None:
    """PerTrialSampler relies on optuna calling before_trial (with the new trial's number)
    inside study.ask(), before any parameter is sampled."""
    seen: list[int] = []
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/p.db")
    cfg = OmegaConf.structured(SAMPLERS["random"](seed=7))
    study.sampler = PerTrialSampler(
        lambda n: build_sampler(cfg, n, None, parallel=False), lambda t: seen.append(t.number)
    )
    space = {"x": FloatDistribution(0, 1)}
    a = study.ask(fixed_distributions=space)
    b = study.ask(fixed_distributions=space)
    assert seen == [0, 1]
    assert a.params["x"] != b.params["x"]
    # The same seed and trial number give the same draw: a seeded sweep is reproducible.
    again = optuna.create_study(storage=f"sqlite:///{tmp_path}/q.db")
    again.sampler = PerTrialSampler(lambda n: build_sampler(cfg, n, None, False), lambda t: None)
    assert again.ask(fixed_distributions=space).params["x"] == a.params["x"]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_config_builds_its_optuna_sampler(name: str) -> None:
    cfg = OmegaConf.structured(SAMPLERS[name](seed=0))
    grid = {"x": [1, 2]} if name == "grid" else None
    sampler = build_sampler(cfg, 3, grid, parallel=True)
    assert type(sampler).__name__.lower().startswith(name.replace("nsgaii", "nsgaii")[:3])
    if name == "tpe":
        assert sampler._constant_liar is True  # on by default with parallel trials
        assert build_sampler(cfg, 3, None, parallel=False)._constant_liar is False
