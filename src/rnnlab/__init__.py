"""rnnlab: Hydra-configured sweeps of recurrent networks on row-by-row MNIST."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"

# ${cwd:} is the directory train.py started in. Hydra's own ${hydra:runtime.cwd} cannot be
# resolved while a sweeper computes hydra.sweep.dir, before any job exists.
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
