"""What a run knows of the Slurm job it runs in, and why a Slurm job ended.

A trial launched by `hydra/launcher=slurm` (submitit) runs inside a Slurm job: the run records
the job id (summary.json, the trial's attributes) and takes its CPU share as its torch threads.
When a trial's job ends without a result, the sweeper asks Slurm's accounting (`sacct`) how it
ended, so the trial's reason says "cancelled by Slurm" or "time limit" rather than the
launcher's exception text.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

# sacct's State column (the job allocation's line) -> what the trial's reason says.
_STATE_REASONS = {
    "CANCELLED": "cancelled by Slurm",
    "TIMEOUT": "time limit",
    "DEADLINE": "deadline reached",
    "NODE_FAIL": "node failure",
    "OUT_OF_MEMORY": "out of memory (Slurm)",
    "PREEMPTED": "preempted by Slurm",
    "BOOT_FAIL": "node boot failure",
    "FAILED": "the job failed",
}
# submitit's own words when it ends a job that got the time-limit signal and may not requeue.
_SUBMITIT_TIMEOUT = "timed-out too many times"
_JOB_IN_TEXT = re.compile(r"\bJob (\d+(?:_\d+)?)\b")


def job_id() -> str | None:
    """The Slurm job id of this process ("123", or "123_4" for an array task), else None."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def cpus_per_task() -> int | None:
    """The CPUs Slurm gave this task (--cpus-per-task), when run in a Slurm job."""
    value = os.environ.get("SLURM_CPUS_PER_TASK")
    return int(value) if value and value.isdigit() and int(value) > 0 else None


def end_reason(job: str, timeout_s: float = 10.0) -> str | None:
    """How job `job` ended, in words ("cancelled by Slurm (job 12)"), from `sacct`; None when
    it completed, is unknown to accounting, or sacct cannot be asked."""
    if not shutil.which("sacct"):
        return None
    try:
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-j", job, "-o", "State,ExitCode"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    line = out.strip().splitlines()[0] if out.strip() else ""
    if not line:
        return None
    state, _, exit_code = line.partition("|")
    words = _STATE_REASONS.get(state.split()[0]) if state else None
    if words is None:
        return None
    if words == "the job failed" and exit_code:
        code, _, signal = exit_code.partition(":")
        detail = f"killed by signal {signal}" if signal not in ("", "0") else f"exit code {code}"
        return f"the job failed ({detail}; job {job})"
    return f"{words} (job {job})"


def launcher_error_reason(text: str, job: str | None = None) -> str | None:
    """The launcher's (submitit's) error for a job that gave no result -> how the job ended,
    in words; `job`: its id when known otherwise (the text does not always name it)."""
    named = _JOB_IN_TEXT.search(text)
    job = named.group(1) if named else job
    if _SUBMITIT_TIMEOUT in text:
        return "time limit" + (f" (job {job})" if job else "")
    return end_reason(job) if job else None
