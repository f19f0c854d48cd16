"""Trials per hour of a sweep with 1 worker vs 2 joblib workers (issue 3, section 4).

    .venv/bin/python benchmarks/sweep_parallel.py [--rounds 3] [--trials 16] [--epochs 3]

Both sweeps run the same short trials (fixed GRU config, MNIST sample, seeds drawn by a
seeded random sampler); with two workers the sweeper gives each trial cpu_count // 2 torch
threads and starts a trial as soon as one ends. Each round runs the 1-worker and the 2-worker
sweep back to back (the order alternates between rounds, this machine's speed drifts);
medians over rounds are printed.

Each round also runs the trials' bare training loop (no Hydra, no Optuna, no files) once in
one process with 2 threads and twice side by side with 1 thread each: the machine's own
2-process scaling, the ceiling for the sweeps' ratio.

Throughput comes from the study itself, two ways:
  sweep   trials / (last trial finished - first trial asked): everything a user waits for
          once the sweep has started, including each worker's first trial, which pays for
          importing torch and optuna in a fresh process;
  steady  trials finished after every worker's first one / the time they took: what a long
          sweep gets per hour once its workers are warm.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]


def run(out: Path, data_dir: Path, workers: int, name: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "hydra/sweeper=rnnlab_optuna",
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={workers}",
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
    trials = study.get_trials()
    if len(trials) != args.trials or any(t.state.name != "COMPLETE" for t in trials):
        raise SystemExit(f"sweep {name}: not all {args.trials} trials completed")
    start = min(t.datetime_start for t in trials)
    done = sorted((t.datetime_complete - start).total_seconds() for t in trials)
    warm_from = done[workers - 1]  # every worker has finished its first trial
    return {
        "workers": workers,
        "wall_s": wall,
        "span_s": done[-1],
        "mean_trial_s": statistics.mean(t.user_attrs["duration_s"] for t in trials),
        "sweep": 3600 * len(done) / done[-1],
        "steady": 3600 * (len(done) - workers) / (done[-1] - warm_from),
    }


BARE_LOOP = """
import sys, time, torch
threads, hidden, batch, epochs = map(int, sys.argv[1:])
torch.set_num_threads(threads)
torch.manual_seed(0)
rnn, head = torch.nn.GRU(28, hidden, batch_first=True), torch.nn.Linear(hidden, 10)
opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=3e-3)
x, y = torch.randn(3500, 28, 28), torch.randint(0, 10, (3500,))
def epoch():
    for i in range(0, len(y), batch):
        out, _ = rnn(x[i : i + batch])
        loss = torch.nn.functional.cross_entropy(head(out[:, -1]), y[i : i + batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
epoch()
t0 = time.perf_counter()
for _ in range(epochs):
    epoch()
print(epochs * len(y) / (time.perf_counter() - t0))
"""


def bare_loop_scaling(args: argparse.Namespace) -> float:
    """Samples/s of 2 single-thread copies side by side / 1 copy with 2 threads."""

    def start(threads: int) -> subprocess.Popen:
        argv = [str(threads), str(args.hidden_size), str(args.batch_size), str(args.epochs)]
        return subprocess.Popen(
            [sys.executable, "-c", BARE_LOOP, *argv], stdout=subprocess.PIPE, text=True
        )

    def rate(proc: subprocess.Popen) -> float:
        out, _ = proc.communicate()
        return float(out)

    one = rate(start(2))
    pair = [start(1), start(1)]
    return sum(rate(p) for p in pair) / one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=16)
    # Trials of ~5 s: short, so that per-trial overhead shows, as it does in a real search.
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cell", default="gru", choices=["rnn", "lstm", "gru"])
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.trials < 3:
        parser.error("--trials must be at least 3")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ratios: dict[str, list[float]] = {"sweep": [], "steady": [], "bare loop": []}
    with tempfile.TemporaryDirectory() as tmp:
        out, data_dir = Path(tmp) / "out", Path(tmp) / "data"
        out.mkdir()
        for r in range(args.rounds):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            rows = {w: run(out, data_dir, w, f"r{r}w{w}", args) for w in order}
            for w in order:
                row = rows[w]
                print(
                    f"round {r + 1}, {w} worker(s): {args.trials} trials in {row['span_s']:.1f} s "
                    f"(command {row['wall_s']:.1f} s, {row['mean_trial_s']:.1f} s per trial): "
                    f"sweep {row['sweep']:.0f} trials/hour, steady {row['steady']:.0f}",
                    flush=True,
                )
            for kind in ("sweep", "steady"):
                ratios[kind].append(rows[2][kind] / rows[1][kind])
            ratios["bare loop"].append(bare_loop_scaling(args))
            print(f"round {r + 1}, bare training loop: {ratios['bare loop'][-1]:.2f}x", flush=True)
    for kind, values in ratios.items():
        print(
            f"2 workers / 1 worker, {kind:9}: median {statistics.median(values):.2f}x "
            f"(rounds: {', '.join(f'{v:.2f}x' for v in values)})"
        )


if __name__ == "__main__":
    main()
