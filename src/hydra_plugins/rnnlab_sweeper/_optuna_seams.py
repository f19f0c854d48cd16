"""The private optuna API the sweeper needs, in one place (tests/test_sweeper_optuna_seams.py
fails loudly if optuna changes any of it).

- A trial's and a study's storage ids (`Trial._trial_id`, `Study._study_id`): optuna 4 has no
  public accessor, yet the storage API (set_trial_user_attr, get_trial, heartbeats) and the
  jobs, which reopen a trial in another process, need the id, not the number.
- Stale trials (by heartbeat) are found by rnnlab.storage.stale_trial_ids, which uses
  `RDBStorage._get_stale_trial_ids`: optuna's only public way, fail_stale_trials, fails them
  without the reason and run dir we record ourselves.
"""

from __future__ import annotations

from typing import Any


def trial_id(trial: Any) -> int:
    """The storage id of an optuna Trial or FrozenTrial."""
    return int(trial._trial_id)


def study_id(study: Any) -> int:
    """The storage id of an optuna Study."""
    return int(study._study_id)
