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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=200, help="batches of 64 per round")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both sides)")
    args = parser.parse_args()
    if find_mnist_files(Path(args.root)) is None:
        sys.exit(f"benchmark: no MNIST files under {args.root}; pass --root")
    if args.threads:
        torch.set_num_threads(args.threads)

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["experiment=seed_book", f"data.root={args.root}", "trainer.progress=false"],
        )
    with open_dict(cfg):
        cfg.data.cache_dir = str(REPO / "data" / "cache")

    # (A) rnnlab: decoded tensors from the cache, batches cut on the device.
    splits = load_splits(cfg.data)
    torch.manual_seed(0)
    model_a = instantiate(cfg.model)
    opt_a = build_optimizer(cfg.optimizer, model_a.parameters(), torch.device("cpu"))
    batches = Batches(
        splits.train_x,
        splits.train_y,
        64,
        0.5,
        0.5,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )

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
    rnnlab_round(cfg, batches, model_a, opt_a, 20)  # warm-up both sides
    textbook_round(b_iter, model_b, opt_b, 20)

    a_rates, b_rates = [], []
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, optimizer "
        f"{type(opt_a).__name__}(fused={opt_a.defaults.get('fused')}), "
        f"{args.rounds} rounds x {args.batches} batches of 64"
    )
    for r in range(args.rounds):
        a_rates.append(rnnlab_round(cfg, batches, model_a, opt_a, args.batches))
        b_rates.append(textbook_round(b_iter, model_b, opt_b, args.batches))
        print(
            f"  round {r + 1}: rnnlab {a_rates[-1]:8,.0f}/s   textbook {b_rates[-1]:8,.0f}/s"
            f"   ratio {a_rates[-1] / b_rates[-1]:.2f}"
        )
    a, b = statistics.median(a_rates), statistics.median(b_rates)
    print(f"rnnlab   (A): {a:,.0f} samples/s (median)")
    print(f"textbook (B): {b:,.0f} samples/s (median)")
    print(f"ratio A/B:    {a / b:.2f}x")
    print(
        f"rnnlab achieved {a * FLOP_PER_SAMPLE / 1e9:.1f} GFLOP/s "
        f"({FLOP_PER_SAMPLE / 1e6:.2f} MFLOP per training sample)"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
