"""Experiment loggers beside metrics.csv: TensorBoard and MLflow (the `logger` config group).

metrics.csv is part of the run folder and the training loop always writes it; `logger=csv`
(the default) adds nothing to it and imports nothing. `logger=tensorboard`, `logger=mlflow`
or `logger=[tensorboard,mlflow]` add the others. The loop talks to all of them through one
`Loggers` object:

    loggers = open_loggers(cfg, run_dir)   # after validation, before the data: bad set-up
                                           # (package missing, URI unusable) is a ConfigError
    loggers.log_epoch(row)                 # each metrics.csv row
    loggers.finish(summary, run_dir)       # at the end, whatever the status; never raises

A logger that fails after it opened logs one warning and is dropped: it never stops training.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError
from rnnlab.runs import (
    CURVES_FILE,
    HYDRA_DIR,
    METRICS_FILE,
    SUMMARY_FILE,
    Status,
)
from rnnlab.secrets import mask_url

log = logging.getLogger(__name__)

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
# The event files' folder in the run dir unless logger.tensorboard.log_dir says otherwise.
TENSORBOARD_DIR = "tensorboard"
# Config keys that say where things are, not what ran: not hyperparameters to compare.
NOT_HPARAMS = ("paths.", "logger.", "trial", "resume")
# MLflow has three end states; a pruned trial and an interrupted run were stopped early.
MLFLOW_STATUS = {
    Status.COMPLETED: "FINISHED",
    Status.PRUNED: "KILLED",
    Status.INTERRUPTED: "KILLED",
    Status.DIVERGED: "FAILED",
    Status.FAILED: "FAILED",
}
# MLflow's opt-in for its (maintenance-mode) file store.
ALLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
# TensorBoard's HParams session end states (tensorboard.plugins.hparams.api_pb2.Status).
TB_STATUS = {
    Status.COMPLETED: "STATUS_SUCCESS",
    Status.PRUNED: "STATUS_ABORTED",
    Status.INTERRUPTED: "STATUS_ABORTED",
    Status.DIVERGED: "STATUS_FAILURE",
    Status.FAILED: "STATUS_FAILURE",
}


class Logger(Protocol):
    name: str

    def log_epoch(self, row: dict[str, Any]) -> None: ...
    def finish(self, summary: dict[str, Any], run_dir: Path) -> None: ...
    def close(self) -> None: ...


class Loggers:
    """The configured loggers as one; a logger that raises is warned about once and dropped."""

    def __init__(self, loggers: list[Logger]) -> None:
        self._loggers = list(loggers)

    @property
    def names(self) -> list[str]:
        return [lg.name for lg in self._loggers]

    def log_epoch(self, row: dict[str, Any]) -> None:
        for lg in list(self._loggers):
            self._guard(lg, "log_epoch", lambda lg=lg: lg.log_epoch(row))

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None:
        for lg in list(self._loggers):
            self._guard(lg, "finish", lambda lg=lg: lg.finish(summary, run_dir))
        self.close()

    def close(self) -> None:
        for lg in self._loggers:
            try:
                lg.close()
            except Exception as e:
                log.warning("logger.%s: could not close: %s", lg.name, _first_line(e))
        self._loggers = []

    def __enter__(self) -> Loggers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _guard(self, lg: Logger, what: str, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as e:
            log.warning(
                "logger.%s failed in %s (%s: %s); training goes on without it",
                lg.name,
                what,
                type(e).__name__,
                _first_line(e),
            )
            self._loggers.remove(lg)
            with contextlib.suppress(Exception):  # already warned about this logger
                lg.close()


def open_loggers(cfg: DictConfig, run_dir: Path) -> Loggers:
    """Open every logger under `cfg.logger`; ConfigError (one line, naming the key) if one
    cannot work. csv alone (or no logger section) opens nothing and imports nothing."""
    section = cfg.get("logger") or {}
    opened: list[Logger] = []
    try:
        for name in section:
            if name == "csv":  # metrics.csv: the training loop writes it regardless
                continue
            opener = _OPENERS.get(name)
            if opener is None:
                raise ConfigError(
                    f"logger.{name}: no such logger; choose from csv, {', '.join(_OPENERS)}"
                )
            opened.append(opener(section[name], cfg, run_dir))
    except BaseException:
        Loggers(opened).close()
        raise
    if opened:
        log.info("loggers: metrics.csv, %s", ", ".join(lg.name for lg in opened))
    return Loggers(opened)


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


# --- TensorBoard -------------------------------------------------------------------------


class TensorBoardLogger:
    """Event files through torch.utils.tensorboard (needs the `tensorboard` package)."""

    name = "tensorboard"

    def __init__(self, section: DictConfig, cfg: DictConfig, run_dir: Path) -> None:
        log_dir = section.get("log_dir") or str(Path(run_dir) / TENSORBOARD_DIR)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "logger=tensorboard needs the tensorboard package: pip install -e '.[tensorboard]'"
            ) from None
        _check_writable(Path(log_dir), "logger.tensorboard.log_dir")
        self.writer = SummaryWriter(log_dir=log_dir)
        self.hparams = {
            k: _tb_value(v) for k, v in flat_config(cfg).items() if not k.startswith(NOT_HPARAMS)
        }

    def log_epoch(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        for column, value in row.items():
            if column != "epoch" and value is not None:
                self.writer.add_scalar(metric_tag(column), value, step)
        self.writer.flush()  # epochs are seconds apart: let TensorBoard show each one

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None:
        """The HParams plugin's three summaries (experiment, session start, session end) in
        this run's own event file, next to the final metrics they name, so the HParams tab
        lists one row per run of a sweep."""
        from torch.utils.tensorboard.summary import hparams

        metrics = final_metrics(summary)
        experiment, session_start, _ = hparams(self.hparams, metrics)
        status = TB_STATUS.get(summary.get("status"), "STATUS_FAILURE")
        file_writer = self.writer.file_writer  # the run's own event file, as add_hparams does
        file_writer.add_summary(experiment)
        file_writer.add_summary(session_start)
        file_writer.add_summary(_session_end(status))
        step = int(summary.get("epochs_completed") or 0)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _session_end(status: str):
    """The HParams session-end summary with this status; torch's hparams() always says
    success, and tensorboard's own summary helpers need TensorFlow."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    content = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=api_pb2.Status.Value(status)),
        version=metadata.PLUGIN_DATA_VERSION,
    )
    plugin = SummaryMetadata.PluginData(
        plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString()
    )
    value = Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG, metadata=SummaryMetadata(plugin_data=plugin)
    )
    return Summary(value=[value])


def _tb_value(v: Any) -> Any:
    # The HParams plugin takes numbers, strings and booleans.
    if v is None:
        return "null"
    return v if isinstance(v, bool | int | float | str) else str(v)


# --- MLflow ------------------------------------------------------------------------------


class MLflowLogger:
    """One MLflow run per training run, through MlflowClient (no global active run, so jobs
    of a multirun that share a process never see each other's run)."""

    name = "mlflow"

    def __init__(self, section: DictConfig, cfg: DictConfig, run_dir: Path) -> None:
        uri = _required_str(section, "logger.mlflow.tracking_uri", "a folder or a URI")
        experiment = _required_str(section, "logger.mlflow.experiment_name", "a name")
        try:
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(
                "logger=mlflow needs the mlflow-skinny package: pip install -e '.[mlflow]'"
            ) from None
        key = f"logger.mlflow.tracking_uri={mask_url(uri)}"
        if "://" not in uri or uri.startswith("file:"):
            # A folder: MLflow's file store. MLflow 3.7+ refuses it unless opted in (it
            # prefers sqlite:///...), but a folder of plain files beside the runs is what
            # this default is for; MLFLOW_ALLOW_FILE_STORE=false in the environment wins.
            os.environ.setdefault(ALLOW_FILE_STORE_ENV, "true")
            folder = uri.removeprefix("file://").removeprefix("file:")
            _check_writable(Path(folder), key.split("=")[0])
        params = [
            Param(k, _param_value(v))
            for k, v in flat_config(cfg).items()
            if not k.startswith("logger.")
        ]
        run_name = section.get("run_name") or _default_run_name(cfg, run_dir)
        with _fail_fast_http():
            try:
                self.client = MlflowClient(tracking_uri=uri)
                experiment_id = self._experiment_id(experiment, _artifact_location(section, uri))
                run = self.client.create_run(
                    experiment_id,
                    run_name=run_name,
                    tags={"rnnlab.run_dir": str(Path(run_dir).resolve())},
                )
                self.run_id = run.info.run_id
            except ConfigError:
                raise
            except Exception as e:
                raise ConfigError(f"{key}: cannot open it ({_first_line(e)})") from None
            try:
                # MLflow takes at most 100 params per batch.
                for i in range(0, len(params), 100):
                    self.client.log_batch(self.run_id, params=params[i : i + 100])
            except Exception as e:
                self.client.set_terminated(self.run_id, "FAILED")
                raise ConfigError(f"{key}: cannot log the params ({_first_line(e)})") from None
        self.ended = False

    def _experiment_id(self, name: str, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=artifact_location)
            except Exception:
                # Another job of the same sweep may have just created it.
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise ConfigError(
                f"logger.mlflow.experiment_name={name}: that experiment is deleted in the "
                "store; restore it (mlflow experiments restore) or choose another name"
            )
        return found.experiment_id

    def log_epoch(self, row: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(row["epoch"])
        metrics = [
            Metric(metric_tag(c), float(v), now, step)
            for c, v in row.items()
            if c != "epoch" and v is not None
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, summary: dict[str, Any], run_dir: Path) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        step = int(summary.get("epochs_completed") or 0)
        metrics = [Metric(k, v, now, step) for k, v in final_metrics(summary).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
        status = summary.get("status")
        self.client.set_tag(self.run_id, "rnnlab.status", str(status))
        if summary.get("reason"):
            self.client.set_tag(self.run_id, "rnnlab.reason", str(summary["reason"])[:5000])
        run_dir = Path(run_dir)
        for name in (SUMMARY_FILE, METRICS_FILE, CURVES_FILE):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        config_yaml = run_dir / HYDRA_DIR / "config.yaml"
        if config_yaml.is_file():
            self.client.log_artifact(self.run_id, str(config_yaml), artifact_path=HYDRA_DIR)
        self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(status, "FAILED"))
        self.ended = True

    def close(self) -> None:
        if not self.ended:  # closed without a summary: the run did not get to its end
            self.ended = True
            self.client.set_terminated(self.run_id, "KILLED")


def _artifact_location(section: DictConfig, uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: as configured; for sqlite:///x/mlflow.db,
    x/mlartifacts (MLflow's default there is ./mlruns under whatever folder train.py was
    started in); otherwise MLflow's default (a file store: inside it; a server: its own)."""
    configured = section.get("artifact_location")
    if configured:
        return str(configured)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None


def _param_value(v: Any) -> str:
    text = "null" if v is None else str(v)
    return text[:500]


def _default_run_name(cfg: DictConfig, run_dir: Path) -> str:
    """The run dir under paths.output_root (e.g. multirun/2026-11-28/10-00-00/3)."""
    root = OmegaConf.select(cfg, "paths.output_root", default=None)
    try:
        return Path(run_dir).resolve().relative_to(Path(root).resolve()).as_posix()
    except (TypeError, ValueError):
        return Path(run_dir).name


@contextmanager
def _fail_fast_http() -> Iterator[None]:
    """While opening: one try with a short timeout, so an unreachable tracking server is
    reported in seconds (MLflow's default retries with backoff for minutes)."""
    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    }
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "10"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_OPENERS: dict[str, Callable[[DictConfig, DictConfig, Path], Logger]] = {
    "tensorboard": TensorBoardLogger,
    "mlflow": MLflowLogger,
}


# --- helpers -----------------------------------------------------------------------------


def _required_str(section: Any, key: str, expected: str) -> str:
    """section.<last part of key> as a non-empty string, else ConfigError naming `key`."""
    value = section.get(key.rpartition(".")[2]) if section is not None else None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}={value!r} is not allowed: expected {expected}")
    return value


def _check_writable(folder: Path, key: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ConfigError(f"{key}={folder}: cannot write there ({e.strerror or e})") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return mask_url(text.splitlines()[0] if text else type(e).__name__)[:300]
