"""Structured configs of the rnnlab_optuna sweeper and its pruners.

The user-facing spelling is the stock optuna sweeper's (sampler, direction, storage,
study_name, n_trials, n_jobs, params with choice/interval/range/tag(log, ...)), plus `pruner`,
`resume` and `timeout`. The `hydra/sweeper/sampler` group is ours, with the fields and names of
hydra-optuna-sweeper 1.4 (optuna 4), so that it composes without that package and either
sweeper can use it when both are installed (they then share the group: whichever plugin Hydra
imports last provides it; the fields are the same).
"""

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# --------------------------------------------------------------------------- samplers
# `seed`: the sweeper derives one seed per trial number from it (a resumed or cooperating sweep
# does not replay the same draws), except for qmc, whose seed scrambles the one sequence.


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    consider_prior: bool | None = None
    prior_weight: float | None = None
    consider_magic_clip: bool | None = None
    consider_endpoints: bool | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    # Model the parameters jointly (and, with group, per set of parameters that occur together,
    # as with a conditional custom_search_space).
    multivariate: bool = False
    group: bool = False
    warn_independent_sampling: bool | None = None
    # Treat running trials as bad when suggesting, so that parallel trials spread out.
    # null: on whenever trials run in parallel (n_jobs > 1 or a parallel launcher).
    constant_liar: bool | None = None
    constraints_func: Any | None = None


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class GridSamplerConf:
    _target_: str = "optuna.samplers.GridSampler"
    # The grid (search_space) is built from hydra.sweeper.params: choice() and range() only.
    _partial_: bool = True
    seed: int | None = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    x0: dict[str, Any] | None = None
    sigma0: float | None = None
    n_startup_trials: int = 1
    independent_sampler: Any | None = None
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Any | None = None
    popsize: int | None = None
    inc_popsize: int = -1
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False
    source_trials: Any | None = None


@dataclass
class QMCSamplerConf:
    _target_: str = "optuna.samplers.QMCSampler"
    seed: int | None = None
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Any | None = None
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: int | None = None
    independent_sampler: Any | None = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Any | None = None
    warn_independent_sampling: bool = True


@dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50
    mutation_prob: float | None = None
    crossover: Any | None = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Any | None = None


SAMPLERS = {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "grid": GridSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "qmc": QMCSamplerConf,
    "gp": GPSamplerConf,
    "nsgaii": NSGAIISamplerConf,
}


# --------------------------------------------------------------------------- pruners
# A pruner's settings live here, not in the search configs (conf/hparams_search), so that
# every pruner choice composes with every search config.


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
    # Epochs a trial always runs before it may be pruned (epochs count from 1): the first
    # epoch of an RNN says little about where it ends up.
    n_warmup_steps: int = 2
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
    # Epochs every trial runs before the first cut.
    min_resource: int = 2
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
    # maximize or minimize, or a list of them (a multi-objective study: the app returns that
    # many values); null: follow optimized_metric (val/acc: maximize, val/loss: minimize),
    # else minimize (the stock sweeper's default).
    direction: Any = None
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
    # More objectives, read from each run's summary.json after the value(s) the app returns
    # (e.g. [num_params] with direction: [maximize, minimize]).
    summary_objectives: list[str] = field(default_factory=list)
    # Deprecated (the stock sweeper's old name for params): still read, with a warning.
    search_space: dict[str, Any] | None = None


cs = ConfigStore.instance()
cs.store(
    group="hydra/sweeper",
    name="rnnlab_optuna",
    node=RnnlabOptunaSweeperConf,
    provider="rnnlab_sweeper",
)
# The stock plugin registers the same group with the same fields: with it installed, its
# entries are used (Hydra 1.4 warns about, and 1.5 refuses, a second registration). Its tpe
# has constant_liar: false, where ours turns it on for parallel trials.
if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
    for name, node in SAMPLERS.items():
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="rnnlab_sweeper")
for name, node in (
    ("none", NopPrunerConf),
    ("median", MedianPrunerConf),
    ("successive_halving", SuccessiveHalvingPrunerConf),
    ("hyperband", HyperbandPrunerConf),
):
    cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="rnnlab_sweeper")
