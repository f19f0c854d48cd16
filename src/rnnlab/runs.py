"""The run folder: the files every run leaves behind, written atomically.

    <run dir>/
      .hydra/{config,hydra,overrides}.yaml   Hydra's record of the composed config
      train.log                              the run's log
      metrics.csv                            one row per epoch (METRIC_COLUMNS)
      summary.json                           the outcome (see README, "The run folder")
      curves.png                             loss and accuracy vs epoch
      checkpoints/last.pt, checkpoints/best.pt

The compare tool and the sweeper read these files; SCHEMA_VERSION changes whenever a
field changes meaning.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


class Status(str, Enum):
    """How a run ended (summary.json `status`); RUNNING only while it trains.

    The members' order is the one every listing uses (counts, tables, trials.csv).
    """

    COMPLETED = "completed"
    DIVERGED = "diverged"
    PRUNED = "pruned"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    RUNNING = "running"

    # Behave as the plain string everywhere: "completed", not "Status.COMPLETED", in messages,
    # and the same dict/Counter key as "completed" read back from a JSON file.
    __str__ = str.__str__
    __hash__ = str.__hash__


# The statuses a finished run can have (everything but RUNNING), in listing order.
FINAL_STATUSES = tuple(s for s in Status if s is not Status.RUNNING)


class Direction(str, Enum):
    """Which way the objective improves (summary.json `objective_mode`: "max" / "min").

    Optuna spells it "maximize" / "minimize" (or StudyDirection): convert with `.optuna`
    and `Direction.from_optuna` at that boundary only.
    """

    MAX = "max"
    MIN = "min"

    __str__ = str.__str__
    __hash__ = str.__hash__

    @property
    def optuna(self) -> str:
        return "maximize" if self is Direction.MAX else "minimize"

    @classmethod
    def from_optuna(cls, value: Any) -> Direction:
        """From "maximize"/"minimize" or an optuna StudyDirection (its name)."""
        name = str(getattr(value, "name", value)).lower()
        if name in ("maximize", "max"):
            return cls.MAX
        if name in ("minimize", "min"):
            return cls.MIN
        raise ValueError(f"not a direction: {value!r} (expected maximize or minimize)")

    @property
    def worst(self) -> float:
        """The objective recorded for a run with no usable value (a diverged run), so a
        sweep records a bad trial and goes on: 0.0 for an accuracy, 1e9 for a loss."""
        return 0.0 if self is Direction.MAX else 1e9

    def better(self, a: float, b: float) -> bool:
        return a > b if self is Direction.MAX else a < b


# The metrics a run can optimise, with their direction.
OPTIMIZED_METRICS = {"val/acc": Direction.MAX, "val/loss": Direction.MIN}

METRIC_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "lr",
    "epoch_time_s",
    "train_samples_per_s",
)
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"
LOG_FILE = "train.log"
HYDRA_DIR = ".hydra"
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"

# The sweep folder (a multirun's hydra.sweep.dir): Hydra's multirun.yaml, the Optuna
# sweeper's results and trials table, and the end-of-sweep comparison table.
MULTIRUN_FILE = "multirun.yaml"
OPTUNA_RESULTS_FILE = "optimization_results.yaml"
TRIALS_FILE = "trials.csv"
SWEEP_SUMMARY_FILE = "summary.md"
SWEEP_FILES = (MULTIRUN_FILE, OPTUNA_RESULTS_FILE, TRIALS_FILE, SWEEP_SUMMARY_FILE)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write through a temp file in the same folder, then rename: no reader sees half a file.

    Unlike a bare mkstemp file (0600), the result gets the usual umask-based mode, so run
    folders and exported tables can be shared with the rest of the team.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save, atomically (checkpoints, data caches)."""
    import torch  # not at the top: compare reads run folders without torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2, default=str) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in METRIC_COLUMNS})
    atomic_write(run_dir / METRICS_FILE, buf.getvalue())


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / METRICS_FILE, newline="", encoding="utf-8") as f:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(f)
        ]


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) >= 1e4 else f"{value:.6f}"
    return value


def plot_curves(run_dir: Path, rows: list[dict[str, Any]], title: str = "") -> None:
    """curves.png: losses and accuracies per epoch (train, val, test)."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val", "test"):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in rows], marker="o", label=split)
        ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in rows], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(run_dir / CURVES_FILE, buf.getvalue())
