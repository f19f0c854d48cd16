"""Shared by test_steps.py and test_gpu.py: the real mnist_sample batches, a model and
optimizer built as train.py builds them, and the training loop's body as it was before
rnnlab.steps (the reference a step must equal)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from rnnlab.data import Batches, load_splits
from rnnlab.optim import build_optimizer

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_train(data_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["data=mnist_sample", *overrides])
    with open_dict(cfg):  # ${hydra:...} only resolves inside a Hydra run
        cfg.paths = {
            "root_dir": str(data_dir),
            "output_root": str(data_dir / "out"),
            "data_dir": str(data_dir),
            "output_dir": str(data_dir / "out"),
        }
    return cfg


def train_batches(cfg: DictConfig, device: torch.device, n: int | None = None) -> Batches:
    """mnist_sample's training split on `device` (its first `n` images), shuffled by seed."""
    splits = load_splits(cfg.data).to(device)
    x, y = splits.train_x[:n], splits.train_y[:n]
    d = cfg.data
    order = torch.Generator().manual_seed(cfg.seed)
    return Batches(x, y, d.batch_size, d.mean, d.std, True, generator=order)


def build(cfg: DictConfig, device: torch.device, capturable: bool = False):
    """Model and optimizer as training._setup builds them (seeded)."""
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model).to(device)
    optimizer = build_optimizer(cfg.optimizer, model.parameters(), device, capturable)
    return model, optimizer


def plain_loop_step(model, optimizer, x, y, clip):
    """The body of training._train_epoch's loop before rnnlab.steps, verbatim."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not model.batch_first:
        x = x.transpose(0, 1)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(params, clip, foreach=True)
    optimizer.step()
    return loss.detach(), logits.detach()


def run_epochs(step, batches: Batches, epochs: int, scheduler=None) -> list[float]:
    """Mean training loss per epoch, accumulated on the device as the loop does."""
    losses = []
    for _ in range(epochs):
        total = torch.zeros((), device=batches.y.device)
        for x, y in batches:
            loss, _ = step(x, y)
            total += loss * len(y)
        losses.append(total.item() / len(batches.y))
        if scheduler is not None:
            scheduler.step()
    return losses


def same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
