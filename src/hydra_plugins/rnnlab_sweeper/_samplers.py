"""The sampler: built from hydra.sweeper.sampler afresh for each trial (a seed of its own)."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from ._errors import SweepConfigError


class PerTrialSampler(BaseSampler):
    """Delegates to `build(trial.number)`, built when optuna starts the trial.

    Optuna only tells the sampler which trial it works for in `before_trial` (study.ask()
    creates the trial, then calls it): this is where a seed per trial number can be chosen
    with public API only. `started(trial)` runs first, before anything can fail, so that the
    new trial is recorded as this sweep's at once.
    """

    def __init__(
        self, build: Callable[[int], BaseSampler], started: Callable[[FrozenTrial], None]
    ) -> None:
        self._build = build
        self._started = started
        self._inner: BaseSampler | None = None

    @property
    def inner(self) -> BaseSampler:
        if self._inner is None:
            raise RuntimeError("PerTrialSampler used before a trial started")
        return self._inner

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._started(trial)
        self._inner = self._build(trial.number)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: list[float] | None,
    ) -> None:
        self.inner.after_trial(study, trial, state, values)


def build_sampler(
    cfg: DictConfig, number: int, grid: dict[str, list[Any]] | None, parallel: bool
) -> BaseSampler:
    """The configured sampler (hydra.sweeper.sampler) for trial `number`.

    `seed` gives one seed per trial number, so a resumed study does not replay the sampler's
    first draws and cooperating sweeps do not draw the same parameters; QMC keeps the one seed
    (it scrambles the whole sequence). TPE's constant_liar: null means on when `parallel`.
    """
    target = str(cfg.get("_target_", ""))
    kwargs: dict[str, Any] = {}
    if "constant_liar" in cfg and cfg.constant_liar is None:
        kwargs["constant_liar"] = parallel
    seed = cfg.get("seed")
    if seed is not None and not target.endswith("QMCSampler"):
        kwargs["seed"] = (int(seed) * 1_000_003 + number) % 2**32
    if target.endswith("CmaEsSampler"):
        _require("cmaes", "hydra/sweeper/sampler=cmaes")
    if target.endswith(("GPSampler", "QMCSampler")):
        _require("scipy", f"hydra/sweeper/sampler={target.rsplit('.', 1)[-1]}")
    with warnings.catch_warnings():
        # Optuna warns that a sampler (or argument) is experimental on every construction.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if grid is not None:
            if cfg.get("_partial_") is True:
                return instantiate(cfg, **kwargs)(grid)
            return instantiate(cfg, search_space=grid, **kwargs)
        return instantiate(cfg, **kwargs)


def _require(module: str, what: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise SweepConfigError(f"{what} needs the Python package {module}: pip install {module}")
