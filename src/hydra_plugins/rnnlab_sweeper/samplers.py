"""A sampler built afresh for each trial, so that each trial can have a seed of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


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
