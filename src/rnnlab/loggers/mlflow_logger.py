"""logger=mlflow: one MLflow run per training run (the mlflow extra, mlflow-skinny)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError
from rnnlab.loggers.common import (
    check_writable,
    final_metrics,
    first_line,
    flat_config,
    metric_tag,
    required_str,
)
from rnnlab.runs import CURVES_FILE, HYDRA_DIR, METRICS_FILE, SUMMARY_FILE, Status
from rnnlab.secrets import mask_url

# MLflow has three end states; a pruned trial and an interrupted run were stopped early.
MLFLOW_STATUS = {
    Status.COMPLETED: "FINISHED",
    Status.PRUNED: "KILLED",
    Status.INTERRUPTED: "KILLED",
    Status.DIVERGED: "FAILED",
    Status.FAILED: "FAILED",
}
# The OS's reason inside a requests/urllib3 error: "[Errno 111] Connection refused".
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"'()]+)")
# MLflow's opt-in for its (maintenance-mode) file store.
ALLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"


class MLflowLogger:
    """One MLflow run per training run, through MlflowClient (no global active run, so jobs
    of a multirun that share a process never see each other's run)."""

    name = "mlflow"

    def __init__(self, section: DictConfig, cfg: DictConfig, run_dir: Path) -> None:
        uri = required_str(section, "logger.mlflow.tracking_uri", "a folder or a URI")
        experiment = required_str(section, "logger.mlflow.experiment_name", "a name")
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
            check_writable(Path(folder), key.split("=")[0])
        params = [
            Param(k, _param_value(v))
            for k, v in flat_config(cfg).items()
            if not k.startswith("logger.")
        ]
        if _database_scheme(uri):
            _probe_database(uri, key)
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
                raise ConfigError(f"{key}: cannot open it ({_reason(e)})") from None
            try:
                # MLflow takes at most 100 params per batch.
                for i in range(0, len(params), 100):
                    self.client.log_batch(self.run_id, params=params[i : i + 100])
            except Exception as e:
                self.client.set_terminated(self.run_id, "FAILED")
                raise ConfigError(f"{key}: cannot log the params ({first_line(e)})") from None
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


def _database_scheme(uri: str) -> bool:
    """A database store (sqlite:///..., postgresql+psycopg://...), as MLflow tells them apart."""
    scheme = uri.partition("://")[0].partition("+")[0].lower()
    return "://" in uri and scheme in ("sqlite", "postgresql", "mysql", "mssql")


def _probe_database(uri: str, key: str) -> None:
    """One connection to a database store, so that a bad one is reported at once: MLflow
    retries opening it with backoff for about 100 s (not configurable)."""
    import sqlalchemy

    try:
        if uri.startswith("sqlite:///"):
            # MLflow creates the database's folder; so does this, for the probe to be fair.
            Path(uri.removeprefix("sqlite:///").partition("?")[0]).parent.mkdir(
                parents=True, exist_ok=True
            )
        engine = sqlalchemy.create_engine(uri)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as e:
        raise ConfigError(f"{key}: cannot open it ({mask_url(_reason(e))})") from None


def _reason(e: Exception) -> str:
    """The root cause of a failed request ("Connection refused"), not the 400 characters of
    URL and retry policy that MLflow and urllib3 wrap around it; else the first line."""
    found = _ERRNO.search(str(e))
    return found.group(1).strip() if found else first_line(e)


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
