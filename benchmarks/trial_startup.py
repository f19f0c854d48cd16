"""How long a fresh trial process takes from its start to its first training step.

A sweep starts one such process per trial (joblib worker or Slurm job), so its start-up is
paid on every trial. Each measured process is a real `train.py` job of a real Optuna trial
(SQLite study, median pruner stored on the trial as the sweeper does), on the MNIST sample
with a tiny RNN; a torch optimizer-step hook stops it at its first step and says which heavy
libraries were imported by then.

    python benchmarks/trial_startup.py                    # this checkout, this Python
    python benchmarks/trial_startup.py --python /other/.venv/bin/python --repo /other/checkout

Prints the median of --repeats processes (one warm-up first: page cache, MNIST decode).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("optuna", "sqlalchemy", "matplotlib", "scipy", "sklearn", "pandas", "alembic")

# Run in the measured interpreter: create the study and ask one trial, as the sweeper does.
MAKE_TRIAL = """
import json, sys, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(study_name="s", storage=sys.argv[1], direction="maximize")
trial = study.ask()
trial.set_user_attr("pruner", {"_target_": "optuna.pruners.MedianPruner"})
print(json.dumps({"trial_id": trial._trial_id, "number": trial.number,
                  "optuna": optuna.__version__}))
"""

# The measured process: train.py with a hook on the first optimizer step.
CHILD = """
import os, runpy, sys, time
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

def first_step(*_):
    heavy = [m for m in {heavy!r} if m in sys.modules]
    print("FIRST_STEP", time.time(), ",".join(heavy), flush=True)
    os._exit(0)

register_optimizer_step_pre_hook(first_step)
sys.argv = ["train.py", *sys.argv[1:]]
os.chdir({repo!r})
runpy.run_path("train.py", run_name="__main__")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--repo", default=str(REPO))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="trial-startup-") as tmp:
        url = f"sqlite:///{tmp}/s.db"
        made = subprocess.run(
            [args.python, "-c", MAKE_TRIAL, url], capture_output=True, text=True, check=True
        )
        trial = json.loads(made.stdout.strip().splitlines()[-1])
        overrides = [
            "data=mnist_sample",
            "model=rnn",
            "model.hidden_size=8",
            "trainer.epochs=1",
            "trainer.progress=false",
            "trainer.save_checkpoints=false",
            f"paths.output_root={tmp}/out",
            f"paths.data_dir={tmp}/data",
            f"trial={{study_name:s,number:{trial['number']},trial_id:{trial['trial_id']},"
            f"storage:'{url}'}}",
        ]
        child = CHILD.format(heavy=HEAVY, repo=args.repo)
        times: list[float] = []
        heavy = ""
        for i in range(args.repeats + 1):
            start = time.time()
            proc = subprocess.run(
                [args.python, "-c", child, *overrides], capture_output=True, text=True
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("FIRST_STEP")), "")
            if not line:
                sys.exit(f"the trial process never reached a training step:\n{proc.stderr[-2000:]}")
            _, stamp, *rest = line.split(" ")
            heavy = rest[0] if rest else ""
            if i:  # the first is a warm-up
                times.append(float(stamp) - start)
    print(
        f"optuna {trial['optuna']}: start -> first training step, median of {len(times)}: "
        f"{statistics.median(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}); "
        f"imported by then: {heavy or 'none of ' + ', '.join(HEAVY)}"
    )


if __name__ == "__main__":
    main()
