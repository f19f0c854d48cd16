"""The thread policy: how many torch threads a run uses when trainer.num_threads is unset.

rnnlab's models are small: one step of RNN-128 at batch 64 is 28 matrix products of 64x128
by 128x128, too little work to split between threads with gain, and a split step waits at
every product for the slowest thread. When another process holds one of the cores (a second
trial, a test suite), that wait becomes the descheduled thread's whole time slice: an epoch
was seen to go from 9.6 s to 82 s. So (figures from benchmarks/threads.py, README "Speed"):

- a run gets at most its share of the CPUs it may use: the CPUs of its affinity mask (a
  Slurm job's --cpus-per-task, taskset, a container's cpuset) divided by the trials the
  launcher runs at once on this machine (hydra/launcher=joblib hydra.launcher.n_jobs=N);
- within that share, a model whose recurrent step is small gets one thread: below
  SPLIT_MIN_MACS multiply-adds per step, two threads were slower than one even on an idle
  machine (0.25-0.56x, with the OMP_WAIT_POLICY=PASSIVE that rnnlab sets), and with
  libgomp's spin-waiting instead, faster alone (1.46x) but collapsing beside a busy process
  (0.30x); one thread kept all of its speed there;
- on a GPU the CPU only launches kernels: at most 4 threads.

trainer.num_threads=N always wins; the summary records the number used and why.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from rnnlab import slurm

if TYPE_CHECKING:  # torch is not imported here: the sweep process uses this module too
    import torch

# Multiply-adds of one step's recurrent matrix product (batch x gates*hidden x hidden) from
# which a second thread paid off on the idle 2-core machine (benchmarks/threads.py).
SPLIT_MIN_MACS = 8_000_000
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
GPU_MAX_THREADS = 4


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which Slurm and cpusets narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def launcher_parallelism(launcher: Any) -> int:
    """How many jobs a Hydra launcher config runs at once on this machine.

    Only the joblib launcher runs several here (n_jobs; -1 is all CPUs, -2 all but one, as
    in joblib); the basic launcher runs one at a time, and submitit/Slurm one job per
    allocation (its CPUs come from the job's own affinity mask). n_jobs=0 raises ValueError:
    joblib refuses it in every job.
    """
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return 1
    n_jobs = launcher.get("n_jobs")
    if n_jobs == 0:
        raise ValueError("hydra.launcher.n_jobs=0: expected >= 1, or -1 for every CPU")
    if n_jobs is None:
        return 1
    return max(1, available_cpus() + 1 + n_jobs if n_jobs < 0 else n_jobs)


def parallel_trials() -> int:
    """How many jobs of this run's multirun run at once on this machine (1 outside one)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 1
    return launcher_parallelism(HydraConfig.get().launcher)


def step_macs(cfg: DictConfig) -> int:
    """Multiply-adds of one time step's recurrent product, the unit a thread would split."""
    m = cfg.model
    directions = 2 if m.bidirectional else 1
    return cfg.data.batch_size * GATES[m.cell] * m.hidden_size * m.hidden_size * directions


def choose(cfg: DictConfig, device: torch.device) -> tuple[int, str]:
    """(threads, why) for this run."""
    if cfg.trainer.num_threads is not None:
        return cfg.trainer.num_threads, "trainer.num_threads"
    cpus, trials = min(available_cpus(), slurm.cpus_per_task() or 1 << 20), parallel_trials()
    share = max(1, cpus // trials)
    where = f"{cpus} cpus" + (f" / {trials} parallel trials" if trials > 1 else "")
    if device.type == "cuda":
        return min(share, GPU_MAX_THREADS), f"GPU run: {where}, at most {GPU_MAX_THREADS}"
    macs = step_macs(cfg)
    if share > 1 and macs < SPLIT_MIN_MACS:
        return 1, f"small step ({macs:,} MACs < {SPLIT_MIN_MACS:,}): 1 thread"
    return share, where
