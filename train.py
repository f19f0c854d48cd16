"""rnnlab's single entry point: `python train.py [overrides]` or `python train.py -m ...`."""

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rnnlab.cli import check_env_variables, check_group_choices, user_errors_as_one_line
from rnnlab.config import validate
from rnnlab.secrets import refuse_unparsable_overrides


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    with user_errors_as_one_line():
        validate(cfg)  # before importing torch, so that a bad value is reported at once
        from rnnlab.training import train

        return train(cfg)


if __name__ == "__main__":
    # A log line that cannot be written (a full disk) must not print a traceback of its own.
    logging.raiseExceptions = False
    check_group_choices(sys.argv[1:], Path(__file__).resolve().parent / "conf")
    check_env_variables(sys.argv[1:])
    refuse_unparsable_overrides(sys.argv[1:])
    main()
