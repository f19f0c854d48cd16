"""Every shipped search config, sampler and pruner: they compose together, and each runs a
real one-trial sweep (tiny RNN, one epoch on the MNIST sample)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from optuna.trial import TrialState

from hydra_plugins.rnnlab_sweeper.config import SAMPLERS
from sweeping import TINY_TRIAL, sweep_env

REPO = Path(__file__).resolve().parents[1]
SEARCHES = sorted(p.stem for p in (REPO / "conf" / "hparams_search").glob("*.yaml"))
PRUNERS = ["none", "median", "successive_halving", "hyperband"]
TINY = [
    *TINY_TRIAL,
    "model.num_layers=1",
    "trainer.save_checkpoints=false",
    "hydra.sweeper.n_trials=1",
]

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_composes_with_every_search_config(search: str, pruner: str) -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"hparams_search={search}", f"hydra/sweeper/pruner={pruner}"],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper.pruner._target_.startswith("optuna.pruners.")


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_composes(sampler: str) -> None:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/sweeper=rnnlab_optuna", f"hydra/sweeper/sampler={sampler}"],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper.sampler._target_.startswith("optuna.samplers.")


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_composes_with_every_search_config(search: str, sampler: str) -> None:
    """As with pruners: a search config sets only what every sampler has (the seed)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"hparams_search={search}", f"hydra/sweeper/sampler={sampler}"],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper.sampler._target_.startswith("optuna.samplers.")


def _sweep(tmp_path: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = sweep_env()
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            f"paths.data_dir={data_dir}",
            f"paths.output_root={tmp_path}",
            *args,
            *TINY,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _only_trial(tmp_path: Path, name: str) -> optuna.trial.FrozenTrial:
    storage = f"sqlite:///{tmp_path}/optuna/{name}.db"
    [trial] = optuna.load_study(study_name=name, storage=storage).get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    return trial


@pytest.mark.slow
@pytest.mark.parametrize("search", SEARCHES)
def test_every_search_config_runs_a_trial(tmp_path: Path, data_dir: Path, search: str) -> None:
    _sweep(tmp_path, data_dir, f"hparams_search={search}")
    trial = _only_trial(tmp_path, search)
    if search == "acc_vs_params":  # multi-objective: val/acc, then num_params
        summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
        assert trial.values == [summary["objective"], summary["num_params"]]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs_a_trial(tmp_path: Path, data_dir: Path, sampler: str) -> None:
    space = (
        ["optimizer.lr=choice(0.01,0.003)"]
        if sampler == "grid"
        else ["optimizer.lr=tag(log,interval(1e-3,1e-2))", "model.dropout=interval(0.0,0.2)"]
    )
    _sweep(
        tmp_path,
        data_dir,
        "hydra/sweeper=rnnlab_optuna",
        f"hydra/sweeper/sampler={sampler}",
        "hydra.sweeper.study_name=s",
        "hydra.sweeper.sampler.seed=0",
        *space,
    )
    assert "optimizer.lr" in _only_trial(tmp_path, "s").params


@pytest.mark.parametrize("name", ["exp?mode=ro", "a%20b"])
def test_study_name_that_sqlalchemy_reads_as_url_syntax_is_refused(
    tmp_path: Path, name: str
) -> None:
    """exp?mode=ro opened a study file named `exp`, a%20b one named `a b.db`."""
    from omegaconf import OmegaConf

    from hydra_plugins.rnnlab_sweeper import _settings
    from hydra_plugins.rnnlab_sweeper._errors import SweepConfigError

    cfg = OmegaConf.create({"paths": {"output_root": str(tmp_path)}})
    assert _settings.default_storage(cfg, "rnn_optuna") == (
        f"sqlite:///{tmp_path.resolve()}/optuna/rnn_optuna.db"
    )
    with pytest.raises(SweepConfigError, match=rf"study_name={re.escape(name)}: .* \? or %"):
        _settings.default_storage(cfg, name)
