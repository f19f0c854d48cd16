"""Epochs saved by pruning, and what it costs in best validation accuracy (issue 3, section 5).

    .venv/bin/python benchmarks/pruning.py [--trials 16] [--epochs 6] [--pruner median]

Runs the same 16-trial study twice on the MNIST sample, without and with the pruner. The
sampler is random with a fixed seed, so both studies draw the same 16 configurations (the
sweeper seeds each trial from sampler.seed and its number) and the comparison isolates the
pruner: total epochs trained, and the best validation accuracy found.
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
SPACE = [
    "model=choice(rnn,gru)",
    "model.hidden_size=choice(16,32,64)",
    "optimizer.lr=tag(log,interval(1e-4,3e-2))",
    "data.batch_size=choice(64,128)",
]


def run(out: Path, data_dir: Path, pruner: str, trials: int, epochs: int) -> dict:
    name = f"pruner_{pruner}"
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "hydra/sweeper=rnnlab_optuna",
        f"hydra/sweeper/pruner={pruner}",
        f"hydra.sweeper.study_name={name}",
        f"hydra.sweeper.n_trials={trials}",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        "data=mnist_sample",
        f"paths.data_dir={data_dir}",
        f"paths.output_root={out}",
        f"trainer.epochs={epochs}",
        "trainer.save_checkpoints=false",
        "trainer.progress=false",
        *SPACE,
    ]
    if pruner == "median":
        cmd += ["hydra.sweeper.pruner.n_startup_trials=4", "hydra.sweeper.pruner.n_warmup_steps=1"]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=out, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out}/optuna/{name}.db")
    ts = study.get_trials()
    best = max(max(t.intermediate_values.values(), default=0.0) for t in ts)
    return {
        "pruner": pruner,
        "trials": len(ts),
        "pruned": sum(t.state.name == "PRUNED" for t in ts),
        "epochs": sum(t.user_attrs.get("epochs") or 0 for t in ts),
        "best_val_acc": best,
        "wall_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument(
        "--pruner", default="median", choices=["median", "successive_halving", "hyperband"]
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        out, data_dir = Path(tmp) / "out", Path(tmp) / "data"
        out.mkdir()
        rows = [run(out, data_dir, p, args.trials, args.epochs) for p in ("none", args.pruner)]
    for r in rows:
        print(
            f"pruner {r['pruner']:>18}: {r['trials']} trials, {r['pruned']} pruned, "
            f"{r['epochs']} epochs, best val acc {100 * r['best_val_acc']:.2f}%, "
            f"{r['wall_s']:.0f} s"
        )
    base, pruned = rows
    print(
        f"epochs: -{100 * (1 - pruned['epochs'] / base['epochs']):.0f}%, best val acc "
        f"difference: {100 * (pruned['best_val_acc'] - base['best_val_acc']):+.2f} points"
    )


if __name__ == "__main__":
    main()
