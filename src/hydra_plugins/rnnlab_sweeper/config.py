"""Structured configs of the rnnlab_optuna sweeper and its pruners.

The user-facing spelling is the stock optuna sweeper's (sampler, direction, storage,
study_name, n_trials, n_jobs, params with choice/interval/range/tag(log, ...)), plus `pruner`,
`resume` and `timeout`. Samplers are the stock plugin's `hydra/sweeper/sampler` options.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    """Stop a trial whose best value so far is worse than the median of earlier trials
    at the same epoch."""

    _target_: str = "optuna.pruners.MedianPruner"
    # Completed trials needed before anything is pruned.
    n_startup_trials: int = 5
    # Epochs a trial always runs before it may be pruned (epochs count from 1).
    n_warmup_steps: int = 1
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    # "auto": the number of epochs of the first completed trial.
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class RnnlabOptunaSweeperConf:
    _target_: str = "hydra_plugins.rnnlab_sweeper.sweeper.RnnlabOptunaSweeper"
    # The sweeper builds sampler and pruner itself (a sampler per trial, seeded from
    # sampler.seed and the trial number, so that resumed and cooperating sweeps differ).
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])

    sampler: Any = MISSING
    pruner: Any = MISSING
    # maximize or minimize; null: follow optimized_metric (val/acc: maximize, val/loss: minimize).
    direction: str | None = None
    # SQLAlchemy URL of the study; null: sqlite:///<paths.output_root>/optuna/<study_name>.db.
    # A password in it is masked in every file and log the sweep writes.
    storage: str | None = None
    # null: the name of the hparams_search config (e.g. rnn_optuna), else "rnnlab".
    study_name: str | None = None
    # A study that already has trials is only continued with resume=true.
    resume: bool = False
    # New trials this invocation runs (a resumed study keeps its old trials on top).
    n_trials: int = 20
    # Trials launched at once; null: as many as the launcher runs in parallel.
    n_jobs: int | None = None
    # With a launcher that runs jobs in processes of their own (joblib, submitit): start a
    # trial as soon as one ends (true), or launch n_jobs at a time and wait for the whole
    # batch (false: Hydra's way; slower, but which trials the sampler has seen when it
    # suggests the next ones no longer depends on which trial finished first).
    pipeline: bool = True
    # Seconds after which no new trial starts; null: no limit.
    timeout: float | None = None
    # Stop the sweep when more than this fraction of its trials failed (1.0: never).
    max_failure_rate: float = 1.0
    params: dict[str, str] | None = None
    # Dotpath of a callable(cfg, trial) that suggests more parameters (as upstream).
    custom_search_space: str | None = None


cs = ConfigStore.instance()
cs.store(
    group="hydra/sweeper",
    name="rnnlab_optuna",
    node=RnnlabOptunaSweeperConf,
    provider="rnnlab_sweeper",
)
for name, node in (
    ("none", NopPrunerConf),
    ("median", MedianPrunerConf),
    ("successive_halving", SuccessiveHalvingPrunerConf),
    ("hyperband", HyperbandPrunerConf),
):
    cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="rnnlab_sweeper")
