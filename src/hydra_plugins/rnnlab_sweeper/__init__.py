"""rnnlab's Hydra sweeper: Optuna with resumable storage, parallel trials, pruning and
failed trials that never end a sweep. Select it with `hydra/sweeper=rnnlab_optuna`."""
