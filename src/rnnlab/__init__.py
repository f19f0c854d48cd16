"""rnnlab: Hydra-configured sweeps of recurrent networks on row-by-row MNIST."""

import os

from omegaconf import OmegaConf

__version__ = "0.1.0"

# OpenMP threads that finish a parallel region first spin, waiting for the others, for a
# while before they sleep (libgomp's default). When another process holds a core, the thread
# it displaced is what they wait for: a 2-thread step beside one busy process ran 5-20x slower
# than a 1-thread step (benchmarks/threads.py). Sleeping at once avoids that collapse. It
# takes effect only if torch is not imported yet, and a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _unique_dir(base: str) -> str:
    # Imported on first use: `rnnlab compare` imports this package and needs none of Hydra.
    from rnnlab.rundirs import unique_dir

    return unique_dir(base)


# ${cwd:} is the directory train.py started in. Hydra's own ${hydra:runtime.cwd} cannot be
# resolved while a sweeper computes hydra.sweep.dir, before any job exists.
OmegaConf.register_new_resolver("cwd", os.getcwd, replace=True)
# ${unique_dir:<base>}: a run or sweep folder no other process gets (see rnnlab.rundirs).
# Cached, so that Hydra copies the answer into each job of a multirun.
OmegaConf.register_new_resolver("unique_dir", _unique_dir, use_cache=True, replace=True)
