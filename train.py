"""rnnlab's single entry point: `python train.py [overrides]` or `python train.py -m ...`."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rnnlab.cli import check_group_choices, user_errors_as_one_line
from rnnlab.training import train


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    with user_errors_as_one_line():
        return train(cfg)


if __name__ == "__main__":
    check_group_choices(sys.argv[1:], Path(__file__).resolve().parent / "conf")
    main()
