"""Threads: samples/s of rnnlab's training step by thread count, alone and beside a busy process.

The evidence behind rnnlab.threads (the default of trainer.num_threads). Every figure is one
training process running rnnlab's own epoch function on synthetic images (the content does
not change the speed); configurations alternate round by round so that machine noise hits all
alike; figures are medians.

    python benchmarks/threads.py                 # 1 vs all threads, rnn/lstm/gru and sizes
    python benchmarks/threads.py --busy          # the policy's choice vs all cores, alone and
                                                 # beside a process that keeps one core busy
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (cell, hidden_size, batch_size): the textbook size for each cell, then smaller and larger.
GRID = [
    ("rnn", 128, 64),
    ("lstm", 128, 64),
    ("gru", 128, 64),
    ("gru", 32, 64),
    ("rnn", 256, 128),
    ("lstm", 256, 128),
    ("gru", 256, 256),
]


def child(cell: str, hidden: int, batch: int, threads: int | None, seconds: float) -> None:
    """Train for about `seconds` and print samples/s as JSON (run in a fresh process)."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rnnlab import threads as policy
    from rnnlab import training
    from rnnlab.data import Batches
    from rnnlab.optim import build_optimizer

    overrides = [f"model={cell}", f"model.hidden_size={hidden}", f"data.batch_size={batch}"]
    overrides += ["trainer.progress=false", "trainer.divergence_check_every=1000000"]
    if threads:
        overrides.append(f"trainer.num_threads={threads}")
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    n, why = policy.choose(cfg, torch.device("cpu"))
    torch.set_num_threads(n)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), torch.device("cpu"))
    images = torch.randint(0, 256, (batch * 20, 28, 28), dtype=torch.uint8)
    labels = torch.randint(0, 10, (batch * 20,))
    batches = Batches(images, labels, batch, 0.5, 0.5, True, torch.Generator().manual_seed(0))
    training._train_epoch(cfg, model, optimizer, batches, 1)  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        training._train_epoch(cfg, model, optimizer, batches, 1)
        done += len(labels)
    rate = done / (time.perf_counter() - start)
    print(json.dumps({"rate": rate, "threads": n, "why": why}))


def measure(cell, hidden, batch, threads, seconds, spin: bool = False) -> dict:
    """One child's figure. spin: libgomp's own waiting (spin, then sleep), as before rnnlab
    set OMP_WAIT_POLICY=PASSIVE (an empty value is kept by rnnlab and ignored by libgomp)."""
    cmd = [sys.executable, __file__, "--child", cell, str(hidden), str(batch), str(threads or 0)]
    env = dict(os.environ, OMP_WAIT_POLICY="") if spin else None
    out = subprocess.run(
        [*cmd, str(seconds)], capture_output=True, text=True, env=env, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def grid(rounds: int, seconds: float, cpus: int) -> None:
    print(f"{cpus} cpus; samples/s, median of {rounds} rounds; 'auto' is the policy's choice")
    print(f"{'model':>16} {'1 thread':>10} {f'{cpus} threads':>11} {'ratio':>6}   auto")
    for cell, hidden, batch in GRID:
        one, many, auto = [], [], None
        for _ in range(rounds):
            one.append(measure(cell, hidden, batch, 1, seconds)["rate"])
            many.append(measure(cell, hidden, batch, cpus, seconds)["rate"])
        auto = measure(cell, hidden, batch, None, 0.1)
        a, b = statistics.median(one), statistics.median(many)
        name = f"{cell}-{hidden} b{batch}"
        print(f"{name:>16} {a:10,.0f} {b:11,.0f} {b / a:6.2f}   {auto['threads']} ({auto['why']})")


def busy(rounds: int, seconds: float, cpus: int) -> None:
    """The textbook config alone and beside a process that spins on one core."""
    print(f"{cpus} cpus; rnn-128 b64 samples/s, median of {rounds} rounds")
    cases = {  # label: (threads, libgomp spin-waiting)
        "policy (auto)": (None, False),
        f"{cpus} threads": (cpus, False),
        f"{cpus} threads, spin": (cpus, True),
    }
    rates: dict[tuple[str, bool], list[float]] = {}
    used: dict[str, int] = {}
    for _ in range(rounds):
        for label, (threads, spin) in cases.items():
            for beside in (False, True):
                spinner = None
                if beside:
                    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    time.sleep(0.2)
                try:
                    result = measure("rnn", 128, 64, threads, seconds, spin)
                finally:
                    if spinner is not None:
                        spinner.kill()
                        spinner.wait()
                rates.setdefault((label, beside), []).append(result["rate"])
                used[label] = result["threads"]
    # A run that keeps its share loses at most the part of its threads the busy core took.
    print(f"{'':>20} {'threads':>7} {'alone':>9} {'beside':>9} {'kept':>6} {'fair share':>10}")
    for label in cases:
        n = used[label]
        a = statistics.median(rates[(label, False)])
        b = statistics.median(rates[(label, True)])
        fair = min(n, cpus - 1) / n
        print(f"{label:>20} {n:7d} {a:9,.0f} {b:9,.0f} {b / a:6.2f} {fair:10.2f}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import rnnlab  # noqa: F401  (before torch: it sets OMP_WAIT_POLICY, as in a run)

        cell, hidden, batch, threads, seconds = sys.argv[2:7]
        child(cell, int(hidden), int(batch), int(threads) or None, float(seconds))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="timed training per figure")
    parser.add_argument("--busy", action="store_true", help="alone vs beside a busy process")
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    (busy if args.busy else grid)(args.rounds, args.seconds, cpus)


if __name__ == "__main__":
    main()
