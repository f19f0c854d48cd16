"""What the loggers share: the config as flat params, tags for metrics.csv columns, the
final metrics from summary.json, and the checks that turn a bad set-up into one line."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError
from rnnlab.secrets import mask_url

# The summary.json fields logged once at the end (TensorBoard's HParams metrics, MLflow
# metrics), each as final/<field>.
FINAL_FIELDS = (
    "objective",
    "best_epoch",
    "best_val_acc",
    "best_val_loss",
    "test_acc",
    "test_loss",
    "epochs_completed",
    "train_samples_per_s",
    "wall_time_s",
)
# Config keys that say where things are, not what ran: not hyperparameters to compare.
NOT_HPARAMS = ("paths.", "logger.", "trial", "resume")


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as {dotted.key: scalar}; lists become JSON text."""
    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that cannot resolve here: keep it as written
        tree = OmegaConf.to_container(cfg, resolve=False)
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        elif isinstance(node, list):
            flat[prefix[:-1]] = json.dumps(node)
        else:
            flat[prefix[:-1]] = node

    walk(tree, "")
    return flat


def metric_tag(column: str) -> str:
    """metrics.csv column -> logger tag: train_loss -> train/loss, lr -> lr."""
    split, _, name = column.partition("_")
    if split in ("train", "val", "test") and name in ("loss", "acc"):
        return f"{split}/{name}"
    return column


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """final/<field> for the numeric summary fields that have a finite value."""
    out = {}
    for field in FINAL_FIELDS:
        v = summary.get(field)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[f"final/{field}"] = float(v)
    return out


def required_str(section: Any, key: str, expected: str) -> str:
    """section.<last part of key> as a non-empty string, else ConfigError naming `key`."""
    value = section.get(key.rpartition(".")[2]) if section is not None else None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}={value!r} is not allowed: expected {expected}")
    return value


def check_writable(folder: Path, key: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"{key}={folder}: cannot write there ({e.strerror or e})") from None


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return mask_url(text.splitlines()[0] if text else type(e).__name__)[:300]
