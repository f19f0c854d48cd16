"""The Hydra Sweeper plugin class; the work is in _impl (imported lazily: Hydra imports every
plugin module at startup, and optuna is slow to import)."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class RnnlabOptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: str | None,
        storage: str | None,
        study_name: str | None,
        resume: bool,
        n_trials: int,
        n_jobs: int | None,
        timeout: float | None,
        max_failure_rate: float,
        params: DictConfig | None,
        custom_search_space: str | None,
    ) -> None:
        from ._impl import RnnlabOptunaSweeperImpl

        self.sweeper = RnnlabOptunaSweeperImpl(
            sampler=sampler,
            pruner=pruner,
            direction=direction,
            storage=storage,
            study_name=study_name,
            resume=resume,
            n_trials=n_trials,
            n_jobs=n_jobs,
            timeout=timeout,
            max_failure_rate=max_failure_rate,
            params=params,
            custom_search_space=custom_search_space,
        )

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
