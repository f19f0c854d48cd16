"""The run folder: the files every run leaves behind, written atomically.

    <run dir>/
      .hydra/{config,hydra,overrides}.yaml   Hydra's record of the composed config
      train.log                              the run's log
      metrics.csv                            one row per epoch (METRIC_COLUMNS)
      summary.json                           the outcome (see README, "The run folder")
      curves.png                             loss and accuracy vs epoch
      checkpoints/last.pt, checkpoints/best.pt

The compare tool and the sweeper read these files; SCHEMA_VERSION changes whenever a
field changes meaning. `Summary` is summary.json: its fields, in the file's order, and how
the outcome of a run fills them in.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

# 2: adds `config` (the resolved config, flattened to dotted keys) and `choices` (the
# config-group choices); every field of 1 keeps its name and meaning.
SCHEMA_VERSION = 2


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
# Hydra's record of a run, inside HYDRA_DIR (a resumed run's are rewritten to say what ran).
HYDRA_CONFIG_FILE = "config.yaml"
HYDRA_RUNTIME_FILE = "hydra.yaml"
HYDRA_OVERRIDES_FILE = "overrides.yaml"
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


TEMP_SUFFIX = ".tmp"


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write through a temp file in the same folder, then rename: no reader sees half a file.

    Unlike a bare mkstemp file (0600), the result gets the usual umask-based mode, so run
    folders and exported tables can be shared with the rest of the team. The temp file is
    `.<name>.<pid>.<random>.tmp`: a process killed mid-write leaves it behind, and
    `remove_stale_temp_files` can tell by the pid that nobody is writing it any more.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX
    )
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


def remove_stale_temp_files(folder: Path, older_than_s: float = 3600.0) -> list[Path]:
    """Delete the temp files that killed writers left in `folder`; return them.

    A temp file is stale when the process named in it is gone, or (written by an older
    rnnlab, or by a process on another host sharing the folder) when it is older than
    `older_than_s`. A file being written right now by a live process is left alone.
    """
    removed = []
    try:
        candidates = [p for p in folder.iterdir() if _is_temp_file(p.name)]
    except OSError:
        return removed
    for path in candidates:
        pid = _writer_pid(path.name)
        try:
            stale = (
                not _alive(pid)
                if pid is not None
                else time.time() - path.stat().st_mtime > older_than_s
            )
            if stale:
                path.unlink()
                removed.append(path)
        except OSError:
            continue
    return removed


def _is_temp_file(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def _writer_pid(name: str) -> int | None:
    # .<file name>.<pid>.<random>.tmp; the file name may hold dots, the random part does not
    parts = name[1 : -len(TEMP_SUFFIX)].split(".")
    if len(parts) >= 3 and parts[-2].isdigit():
        return int(parts[-2])
    return None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> None:
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


# ---------------------------------------------------------------------------------------
# summary.json


@dataclass(kw_only=True)
class Summary:
    """summary.json, field by field in the file's order (README, "The run folder").

    Made by `start` when a run begins; the device and data fields as they become known;
    `conclude` fills in the outcome from the epochs' rows; `write` puts it in the run dir.
    """

    schema_version: int = SCHEMA_VERSION
    status: Status = Status.RUNNING
    reason: str | None = None
    optimized_metric: str
    objective_mode: Direction
    objective: float | None = None
    started_at: str
    resumed_from: str | None = None
    seed: int
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""
    device: str | None = None
    device_name: str | None = None
    torch_threads: int | None = None
    torch_threads_why: str | None = None  # the thread policy's reason (rnnlab.threads)
    slurm_job_id: str | None = None  # the Slurm job the run ran in (hydra/launcher=slurm)
    data_source: str | None = None
    data_sizes: dict[str, int] | None = None
    num_params: int | None = None
    best_epoch: int | None = None
    best_val_acc: float | None = None
    best_val_loss: float | None = None
    test_acc: float | None = None
    test_loss: float | None = None
    epochs_completed: int = 0
    epochs_planned: int | None = None
    train_samples_per_s: float | None = None
    # how the step ran (rnnlab.steps, rnnlab.gpu): cuda_graphs is whether a graph was replayed
    kernel: str | None = None  # the recurrent layer: "rnnlab" (rnnlab.kernels) or "torch"
    precision: str | None = None
    cuda_graphs: bool | None = None
    cuda_graphs_fallback: str | None = None  # why trainer.cuda_graphs=true ran eagerly
    peak_gpu_memory_mb: float | None = None
    wall_time_s: float | None = None
    finished_at: str | None = None
    # v2: what ran, as plain JSON (compare reads these instead of Hydra's YAML files)
    config: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def start(cls, config: Mapping[str, Any], choices: Mapping[str, Any], **run: Any) -> Summary:
        """A running run's summary; `config` is the resolved config as a plain dict."""
        metric = config["optimized_metric"]
        return cls(
            optimized_metric=metric,
            objective_mode=OPTIMIZED_METRICS[metric],
            seed=config["seed"],
            started_at=now_iso(),
            config=flatten_config(config),
            choices=run_choices(choices),
            **run,
        )

    @property
    def direction(self) -> Direction:
        return Direction(self.objective_mode)

    def conclude(self, history: list[dict[str, Any]], best: dict[str, Any] | None) -> None:
        """The outcome from the epochs' rows (`best`: the row with the best objective)."""
        if self.status is Status.RUNNING:  # an exception nobody classified got here
            self.status = Status.FAILED
        for key in ("val_acc", "val_loss"):
            setattr(self, f"best_{key}", best[key] if best else None)
        self.best_epoch = best["epoch"] if best else None
        self.test_acc = best["test_acc"] if best else None
        self.test_loss = best["test_loss"] if best else None
        if self.status is Status.DIVERGED or best is None:
            self.objective = self.direction.worst
        else:
            self.objective = best[metric_column(self.optimized_metric)]
        speeds = [r["train_samples_per_s"] for r in history]
        self.epochs_completed = len(history)
        self.train_samples_per_s = statistics.median(speeds) if speeds else None
        self.finished_at = now_iso()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, run_dir: Path) -> None:
        write_summary(run_dir, self.to_dict())


SUMMARY_FIELDS = tuple(f.name for f in fields(Summary))


def metric_column(optimized_metric: str) -> str:
    """The metrics.csv column of an optimised metric: val/acc -> val_acc."""
    return optimized_metric.replace("/", "_")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# Left out of summary.json's `config`: the trial subtree holds the study's storage URL.
UNRECORDED_CONFIG_KEYS = ("trial",)


def flatten_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """{"model": {"cell": "lstm"}} -> {"model.cell": "lstm"}; lists stay lists.

    `config` is a resolved plain container (OmegaConf.to_container(cfg, resolve=True)).
    An empty mapping stays as its key with {} so that it is not lost.
    """
    flat: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, Mapping) and value:
                walk(value, dotted + ".")
            else:
                flat[dotted] = _jsonable(value)

    walk({k: v for k, v in config.items() if k not in UNRECORDED_CONFIG_KEYS}, "")
    return flat


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


def run_choices(choices: Mapping[str, Any]) -> dict[str, str | None]:
    """Hydra's runtime.choices without Hydra's own groups (hydra/launcher, ...)."""
    return {
        str(group): None if choice is None else str(choice)
        for group, choice in choices.items()
        if not str(group).startswith("hydra/") and group != "hydra"
    }
