"""What the sweep tests share: the tiny trial they all run, and train.py's environment.

A trial here trains an RNN-8 for one epoch on 500 digits of the MNIST sample (validation 400,
test 4,100: evaluation is cheap, training is not), so a real sweep costs seconds.
"""

from __future__ import annotations

import os

from rnnlab import secrets

TINY_TRIAL = [
    "data=mnist_sample",
    "data.val_size=400",
    "data.test_size=4100",
    "model.hidden_size=8",
    "data.batch_size=64",
    "trainer.epochs=1",
    "trainer.progress=false",
]


def sweep_env(**extra: str) -> dict[str, str]:
    """This process's environment for a train.py child, without a real storage URL left over
    from another sweep (the jobs must get theirs from their own sweep)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env.pop(secrets.STORAGE_ENV, None)
    return env
