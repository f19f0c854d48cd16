"""Many small trials on one GPU (issue 13): trials/hour for N parallel trials, and the step's
speed in eager, CUDA-graph and bf16 mode.

    python benchmarks/gpu_sweep.py [--data-root shared/data/mnist/raw] [--trials 16]
                                   [--jobs 1,2,4,8] [--epochs 1] [--out DIR]
    python benchmarks/gpu_sweep.py --device cpu --quick     # the smoke test (tests/test_gpu_sweep.py)

Part 1 (speed): in this process, rnn/lstm/gru-128 at batch 64 on the training split, one
warm-up epoch then `--timed-epochs` timed ones per mode (eager, graphs, bf16, bf16+graphs),
through rnnlab.steps exactly as a run trains; prints samples/s and seconds per epoch, and
whether the graph was really replayed (or why not).

Part 2 (trials/hour): for each N in --jobs, what a user runs:
    python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=N seed=range(0,16)
                    trainer.gpu_memory_fraction=0.9/N trainer.num_threads=cores/N ...
the same 16 textbook trials (seeds 0..15) each time; trials/hour = trials / wall time of the
whole command (start-up of every trial included), and the speed-up over N=1. The per-trial
peak GPU memory comes from the trials' summary.json files.

Without CUDA (and without --device cpu) it refuses in one line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from rnnlab.data import Batches, load_splits
from rnnlab.optim import build_optimizer
from rnnlab.runs import SUMMARY_FILE
from rnnlab.steps import make_train_step, wants_cuda_graphs

REPO = Path(__file__).resolve().parents[1]
MODES = {  # name: (precision, cuda_graphs)
    "eager": ("fp32", False),
    "graphs": ("fp32", True),
    "bf16": ("bf16", False),
    "bf16+graphs": ("bf16", True),
}


def data_overrides(args: argparse.Namespace) -> list[str]:
    if args.data_root is None:
        return ["data=mnist_sample", f"paths.data_dir={args.work}/data"]
    root = Path(args.data_root).resolve()
    return [
        "data=mnist",
        f"data.root={root}",
        "data.strict=true",
        f"data.cache_dir={args.work}/cache",
        f"paths.data_dir={args.work}/data",
    ]


def compose_cfg(args: argparse.Namespace, *overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*data_overrides(args), *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(args.work / "unused")
    return cfg


def speed(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Part 1: samples/s and epoch time per cell and mode, in this process."""
    base = compose_cfg(args)
    splits = load_splits(base.data).to(device)
    n = args.train_images or len(splits.train_y)
    x, y = splits.train_x[:n], splits.train_y[:n]
    rows = []
    for cell in args.cells:
        for mode in args.modes:
            precision, graphs = MODES[mode]
            cfg = compose_cfg(
                args,
                f"model={cell}",
                f"trainer.precision={precision}",
                f"trainer.cuda_graphs={graphs}",
            )
            torch.manual_seed(cfg.seed)
            model = instantiate(cfg.model).to(device)
            optimizer = build_optimizer(
                cfg.optimizer,
                model.parameters(),
                device,
                capturable=wants_cuda_graphs(cfg.trainer, device),
            )
            step = make_train_step(model, optimizer, cfg.trainer, device)
            d = cfg.data
            order = torch.Generator().manual_seed(cfg.seed)
            batches = Batches(x, y, d.batch_size, d.mean, d.std, True, generator=order)
            model.train()
            epoch_times = []
            for _ in range(1 + args.timed_epochs):  # the first one warms up (and captures)
                t = time.perf_counter()
                loss = train_epoch(step, batches, cfg.trainer.divergence_check_every)
                epoch_times.append(time.perf_counter() - t)
            per_epoch = statistics.median(epoch_times[1:])
            rows.append(
                dict(
                    cell=cell,
                    mode=mode,
                    samples_per_s=n / per_epoch,
                    epoch_s=per_epoch,
                    final_loss=loss,
                    graphs=step.cuda_graphs,
                    fallback=step.fallback,
                )
            )
            print(format_speed(rows[-1]), flush=True)
    return rows


def train_epoch(step, batches: Batches, check_every: int) -> float:
    """The training loop's work: losses summed on the device, a finite-check every few steps."""
    device = batches.y.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    for i, (x, y) in enumerate(batches, 1):
        loss, logits = step(x, y)
        loss_sum += loss * len(y)
        correct += (logits.argmax(1) == y).sum()
        if i % check_every == 0 and not torch.isfinite(loss_sum):
            raise RuntimeError("non-finite loss")
    return loss_sum.item() / len(batches.y)


def format_speed(r: dict) -> str:
    note = "graph replayed" if r["graphs"] else (r["fallback"] or "eager")
    return (
        f"  {r['cell']:>4}-128  {r['mode']:<12} {r['samples_per_s']:>10,.0f} samples/s  "
        f"{r['epoch_s']:7.2f} s/epoch  loss {r['final_loss']:.6f}  ({note})"
    )


def sweep(args: argparse.Namespace, device: torch.device) -> list[dict]:
    """Part 2: trials/hour of the same trials run N at a time, each its own process."""
    cores = os.cpu_count() or 1
    rows = []
    for n_jobs in args.jobs:
        out = args.work / f"sweep-n{n_jobs}"
        cmd = [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            "hydra/launcher=joblib",
            f"hydra.launcher.n_jobs={n_jobs}",
            f"hydra.sweep.dir={out}",
            f"seed=range(0,{args.trials})",
            f"trainer.epochs={args.epochs}",
            f"trainer.device={device.type}",
            f"trainer.num_threads={max(1, cores // n_jobs)}",
            "trainer.save_checkpoints=false",
            "trainer.progress=false",
            *data_overrides(args),
            *args.trial_override,
        ]
        if device.type == "cuda":
            cmd.append(f"trainer.gpu_memory_fraction={round(0.9 / n_jobs, 3)}")
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise SystemExit(f"gpu_sweep: the N={n_jobs} sweep failed:\n" + "\n".join(tail))
        summaries = [json.loads(p.read_text()) for p in sorted(out.glob(f"*/{SUMMARY_FILE}"))]
        if len(summaries) != args.trials:
            raise SystemExit(
                f"gpu_sweep: N={n_jobs}: {len(summaries)} summaries, expected {args.trials}"
            )
        peaks = [s.get("peak_gpu_memory_mb") for s in summaries]
        rows.append(
            dict(
                n_jobs=n_jobs,
                trials=len(summaries),
                wall_s=wall,
                trials_per_hour=len(summaries) / wall * 3600,
                median_samples_per_s=statistics.median(s["train_samples_per_s"] for s in summaries),
                peak_gpu_mb=max((p for p in peaks if p is not None), default=None),
                statuses=sorted({s["status"] for s in summaries}),
            )
        )
        print(format_sweep(rows[-1], rows[0]), flush=True)
    return rows


def format_sweep(r: dict, first: dict) -> str:
    peak = f"{r['peak_gpu_mb']:.0f} MB" if r["peak_gpu_mb"] is not None else "-"
    return (
        f"  N={r['n_jobs']:<2} {r['trials']} trials in {r['wall_s']:7.1f} s  "
        f"{r['trials_per_hour']:8.0f} trials/hour  x{r['trials_per_hour'] / first['trials_per_hour']:.2f}  "
        f"{r['median_samples_per_s']:>9,.0f} samples/s per trial  peak/trial {peak}  "
        f"{','.join(r['statuses'])}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (mnist_sample)")
    p.add_argument("--data-root", help="folder with the MNIST .gz files; default mnist_sample")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--jobs", default="1,2,4,8", help="N values, comma-separated")
    p.add_argument("--epochs", type=int, default=1, help="epochs per sweep trial")
    p.add_argument("--timed-epochs", type=int, default=2)
    p.add_argument("--train-images", type=int, help="part 1 on the first N training images")
    p.add_argument("--cells", default="rnn,lstm,gru")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--out", help="write results.json here (default: only print)")
    p.add_argument("--trial-override", action="append", default=[], help="extra trial override")
    args = p.parse_args(argv)
    if args.quick:
        args.data_root, args.trials, args.jobs = None, 2, "1,2"
        args.timed_epochs, args.train_images = 1, 256
        args.cells, args.modes = "rnn", "eager,graphs,bf16"
        args.trial_override += ["model.hidden_size=16", "data.val_size=100", "data.test_size=100"]
    args.jobs = [int(j) for j in str(args.jobs).split(",")]
    args.cells = args.cells.split(",")
    args.modes = args.modes.split(",")
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        p.error(f"--modes: unknown {unknown}; allowed: {', '.join(MODES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_sweep: no CUDA device here; run it on a GPU machine or use --device cpu")
        return 2
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(1)  # these small steps are per-op overhead; threads only contend
    with tempfile.TemporaryDirectory(prefix="gpu_sweep-") as tmp:
        args.work = Path(tmp)
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(
            f"gpu_sweep on {where}, torch {torch.__version__}, {os.cpu_count()} cores, "
            f"data {'mnist (' + args.data_root + ')' if args.data_root else 'mnist_sample'}",
            flush=True,
        )
        results: dict = {"device": where, "torch": torch.__version__}
        if not args.skip_speed:
            print("speed (batch 64, one warm-up epoch, median of the timed ones):", flush=True)
            results["speed"] = speed(args, device)
        if not args.skip_sweep:
            print(
                f"trials/hour, {args.trials} identical trials of {args.epochs} epoch(s), "
                "N at a time (joblib launcher):",
                flush=True,
            )
            results["sweep"] = sweep(args, device)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_sweep.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
