"""Trials per hour of a sweep with 1 worker vs 2 joblib workers (issue 3, section 4).

    .venv/bin/python benchmarks/sweep_parallel.py [--trials 8] [--epochs 2]

Both sweeps run the same short trials (fixed RNN config, MNIST sample, same seed); with two
workers the sweeper gives each trial cpu_count // 2 torch threads. Throughput is measured
from the study itself: trials / (last trial finished - first trial started), so Python and
worker start-up is left out; the whole command's wall time is printed as well.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, data_dir: Path, n_jobs: int, args: argparse.Namespace) -> dict:
    name = f"parallel{n_jobs}"
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "hydra/sweeper=rnnlab_optuna",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={n_jobs}",
        f"hydra.sweeper.n_jobs={n_jobs * args.batch_factor}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.n_trials={args.trials}",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        "data=mnist_sample",
        f"paths.data_dir={data_dir}",
        f"paths.output_root={out}",
        f"model={args.cell}",
        f"model.hidden_size={args.hidden_size}",
        f"data.batch_size={args.batch_size}",
        "optimizer.lr=3e-3",
        f"trainer.epochs={args.epochs}",
        "trainer.save_checkpoints=false",
        "trainer.progress=false",
        "seed=range(0,1000)",
    ]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=out, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out}/optuna/{name}.db")
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    span = (
        max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)
    ).total_seconds()
    mean = sum(t.user_attrs.get("duration_s") or 0 for t in done) / max(1, len(done))
    return {
        "workers": n_jobs,
        "mean_trial_s": mean,
        "trials": len(done),
        "span_s": span,
        "wall_s": wall,
        "trials_per_hour": 3600 * len(done) / span,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    # Trials launched per batch = workers x this; >1 lets joblib refill a worker that is done
    # instead of waiting for the batch's slowest trial.
    parser.add_argument("--batch-factor", type=int, default=1)
    # Trials of ~10 s: long enough that training, not per-trial bookkeeping, dominates.
    parser.add_argument("--cell", default="gru", choices=["rnn", "lstm", "gru"])
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        out, data_dir = Path(tmp) / "out", Path(tmp) / "data"
        out.mkdir()
        rows = [run(out, data_dir, n, args) for n in (1, 2)]
    for r in rows:
        print(
            f"{r['workers']} worker(s): {r['trials']} trials in {r['span_s']:.1f} s "
            f"(command {r['wall_s']:.1f} s, {r['mean_trial_s']:.1f} s per trial) = "
            f"{r['trials_per_hour']:.0f} trials/hour"
        )
    print(
        f"speed-up with 2 workers: {rows[1]['trials_per_hour'] / rows[0]['trials_per_hour']:.2f}x"
    )


if __name__ == "__main__":
    main()
