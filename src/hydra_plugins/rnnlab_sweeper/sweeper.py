"""The Hydra Sweeper plugin class; the work is in _impl (imported lazily: Hydra imports every
plugin module at startup, and optuna is slow to import)."""

import logging
from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class RnnlabOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        # The settings are the fields of RnnlabOptunaSweeperConf (config.py), typed by Hydra.
        # Importing optuna imports alembic, which logs each of its plugins at INFO.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from ._impl import RnnlabOptunaSweeperImpl

        self.sweeper = RnnlabOptunaSweeperImpl(**settings)

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> None:
        return self.sweeper.sweep(arguments)
