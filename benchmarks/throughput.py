"""Training throughput: rnnlab's data path and loop (A) against the textbook pipeline (B).

Both train the textbook model (RNN-128 + Linear, Adam 1e-3, batch 64) on real MNIST. Rounds
alternate A and B in this one process so that machine noise hits both alike; the ratio of
medians is the figure to quote.

    python benchmarks/throughput.py [--root ../shared/data/mnist] [--rounds 5] [--batches 200]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from rnnlab import training
from rnnlab.data import Batches, find_mnist_files, load_splits
from rnnlab.optim import build_optimizer

REPO = Path(__file__).resolve().parents[1]
FLOP_PER_SAMPLE = 3.19e6  # forward + backward of RNN-128 over 28 steps, plus the head


class TextbookRNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(28, 128, batch_first=True)
        self.fc = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.fc(out[:, -1, :])


def textbook_round(loader_iter, model, optimizer, n_batches: int) -> float:
    """The textbook's inner loop, per-step .item() calls included; returns samples/s."""
    criterion = nn.CrossEntropyLoss()
    model.train()
    running_loss, correct, total = 0.0, 0, 0
    start = time.perf_counter()
    for _ in range(n_batches):
        images, labels = next(loader_iter)
        images = images.squeeze(1)
        outputs = model(images)
        loss = criterion(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        _, predicted = outputs.max(1)
        total += labels.size(0)
        correct += (predicted == labels).sum().item()
    return total / (time.perf_counter() - start)


def rnnlab_round(cfg, batches: Batches, model, optimizer, n_batches: int) -> float:
    """rnnlab's own epoch function over a slice of the training set; returns samples/s."""
    subset = Batches(
        batches.x[: n_batches * batches.batch_size],
        batches.y[: n_batches * batches.batch_size],
        batches.batch_size,
        mean=0.5,
        std=0.5,
        shuffle=True,
        generator=batches.generator,
    )
    start = time.perf_counter()
    training._train_epoch(cfg, model, optimizer, subset, epoch=1)
    return len(subset.y) / (time.perf_counter() - start)


def compose_cfg(root: str, *overrides: str):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["experiment=seed_book", f"data.root={root}", "trainer.progress=false"]
            + list(overrides),
        )
    with open_dict(cfg):
        cfg.data.cache_dir = str(REPO / "data" / "cache")
    return cfg


def rnnlab_side(cfg, splits, batch_size: int = 64):
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), torch.device("cpu"))
    batches = Batches(
        splits.train_x, splits.train_y, batch_size, 0.5, 0.5, True, torch.Generator().manual_seed(0)
    )
    return model, optimizer, batches


def profile_step(cfg, model, optimizer, batches) -> None:
    """Where one training step's time goes (rnnlab's loop, 50 steps)."""
    from torch.profiler import ProfilerActivity, profile

    rnnlab_round(cfg, batches, model, optimizer, 10)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rnnlab_round(cfg, batches, model, optimizer, 50)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=200, help="batches of 64 per round")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads, both sides (default: all)"
    )
    parser.add_argument("--cells", action="store_true", help="also rnn/lstm/gru-128 samples/s")
    parser.add_argument("--profile", action="store_true", help="profile rnnlab's step")
    args = parser.parse_args()
    if find_mnist_files(Path(args.root)) is None:
        sys.exit(f"benchmark: no MNIST files under {args.root}; pass --root")
    cfg = compose_cfg(args.root)
    # Both sides run with the same threads (by default torch's own: every core, as the
    # textbook runs and as this benchmark always measured), so that the ratio measures the
    # data path, the loop and the kernel, not the thread setting. torch is imported before
    # rnnlab here, so OpenMP keeps libgomp's own waiting on both sides.
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)

    # (A) rnnlab: decoded tensors from the cache, batches cut on the device, its RNN kernel.
    # (C) the same with model.kernel=torch: what the kernel alone contributes.
    splits = load_splits(cfg.data)
    model_a, opt_a, batches = rnnlab_side(cfg, splits)
    cfg_c = compose_cfg(args.root, "model.kernel=torch")
    model_c, opt_c, batches_c = rnnlab_side(cfg_c, splits)

    # (B) textbook: torchvision's MNIST + ToTensor/Normalize through a DataLoader.
    tmp = Path(tempfile.mkdtemp(prefix="rnnlab-bench-"))
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in find_mnist_files(Path(args.root)).values():
        shutil.copy(path, raw / path.name)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5], [0.5])])
    train_set = datasets.MNIST(str(tmp), train=True, download=True, transform=transform)
    loader = DataLoader(train_set, batch_size=64, shuffle=True)
    torch.manual_seed(0)
    model_b = TextbookRNN()
    opt_b = torch.optim.Adam(model_b.parameters(), lr=1e-3)

    def loader_batches():
        while True:
            yield from loader

    b_iter = loader_batches()
    rnnlab_round(cfg, batches, model_a, opt_a, 20)  # warm-up every side
    rnnlab_round(cfg_c, batches_c, model_c, opt_c, 20)
    textbook_round(b_iter, model_b, opt_b, 20)

    rates: dict[str, list[float]] = {"A": [], "B": [], "C": []}
    print(
        f"torch {torch.__version__}, {threads} threads, optimizer "
        f"{type(opt_a).__name__}(fused={opt_a.defaults.get('fused')}), "
        f"{args.rounds} rounds x {args.batches} batches of 64"
    )
    for r in range(args.rounds):
        rates["A"].append(rnnlab_round(cfg, batches, model_a, opt_a, args.batches))
        rates["B"].append(textbook_round(b_iter, model_b, opt_b, args.batches))
        rates["C"].append(rnnlab_round(cfg_c, batches_c, model_c, opt_c, args.batches))
        a, b, c = rates["A"][-1], rates["B"][-1], rates["C"][-1]
        print(
            f"  round {r + 1}: rnnlab {a:8,.0f}/s   textbook {b:8,.0f}/s   ratio {a / b:.2f}"
            f"   (kernel=torch {c:8,.0f}/s, ratio {c / b:.2f})"
        )
    ratios = [a / b for a, b in zip(rates["A"], rates["B"], strict=True)]
    a, b, c = (statistics.median(rates[k]) for k in "ABC")
    print(f"rnnlab   (A): {a:,.0f} samples/s (median)")
    print(f"textbook (B): {b:,.0f} samples/s (median)")
    print(f"ratio A/B:    {statistics.median(ratios):.2f}x (median of per-round ratios)")
    print(f"rnnlab with model.kernel=torch (C): {c:,.0f} samples/s, C/B {c / b:.2f}x")
    print(
        f"rnnlab achieved {a * FLOP_PER_SAMPLE / 1e9:.1f} GFLOP/s "
        f"({FLOP_PER_SAMPLE / 1e6:.2f} MFLOP per training sample)"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    if args.cells:
        cell_table(args.root, splits, args.rounds, args.batches)
    if args.profile:
        profile_step(cfg, model_a, opt_a, batches)


def cell_table(root: str, splits, rounds: int, n_batches: int) -> None:
    """samples/s of rnnlab's loop for each cell at 128 hidden units, batch 64, side by side."""
    sides = {}
    for cell in ("rnn", "lstm", "gru"):
        cfg = compose_cfg(root, f"model={cell}")
        model, optimizer, batches = rnnlab_side(cfg, splits)
        sides[cell] = (cfg, batches, model, optimizer)
        rnnlab_round(*sides[cell], 10)
    rates: dict[str, list[float]] = {cell: [] for cell in sides}
    for _ in range(rounds):
        for cell, side in sides.items():
            rates[cell].append(rnnlab_round(*side, n_batches))
    print(f"per cell, 128 hidden units, batch 64, {torch.get_num_threads()} threads (median):")
    for cell, r in rates.items():
        print(f"  {cell:5s} {statistics.median(r):8,.0f} samples/s")


if __name__ == "__main__":
    main()
