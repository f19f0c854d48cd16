"""Per-epoch reports from a training run to the Optuna trial it belongs to (pruning).

The rnnlab sweeper sets `cfg.trial` for each job; plain runs have `trial: null`.
"""

from __future__ import annotations

from typing import Any


class TrialReporter:
    """Reports the optimised metric after each epoch and says whether to stop early."""

    def should_prune(self, epoch: int, value: float) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


def reporter_from_config(trial_cfg: Any) -> TrialReporter | None:
    if not trial_cfg:
        return None
    raise NotImplementedError("trial reporting arrives with the rnnlab sweeper")
