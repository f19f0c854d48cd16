"""The `logger` group: TensorBoard and MLflow, read back with their own readers.

Most tests drive open_loggers / log_epoch / finish with a synthetic run (fast); the slow ones
run train.py for real, once with both loggers, once as a multirun, once with a bad URI.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rnnlab import runs
from rnnlab.errors import ConfigError
from rnnlab.loggers import open_loggers

pytest.importorskip("tensorboard", reason="the tensorboard extra (in dev)")
pytest.importorskip("mlflow", reason="the mlflow extra (in dev)")

from mlflow.tracking import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)
from tensorboard.plugins.hparams import api_pb2, metadata  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3

# The file store is opt-in from MLflow 3.7 on; the logger opts in for its own process, the
# test's own client (which reads back) needs the same.
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def make_cfg(tmp_path: Path, *loggers: str, **overrides: str):
    """A small resolved config like the one train.py composes, with these loggers."""
    section = {
        "csv": {},
        "tensorboard": {"log_dir": None},  # the default: <run dir>/tensorboard
        "mlflow": {
            "tracking_uri": str(tmp_path / "mlruns"),
            "experiment_name": "rnnlab-test",
            "artifact_location": None,
            "run_name": None,
        },
    }
    cfg = OmegaConf.create(
        {
            "model": {"cell": "lstm", "hidden_size": 8, "num_layers": 1, "dropout": 0.0},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.003, "betas": [0.9, 0.999]},
            "trainer": {"epochs": EPOCHS},
            "seed": 7,
            "optimized_metric": "val/acc",
            "resume": None,
            "trial": None,
            "paths": {"output_root": str(tmp_path), "output_dir": str(tmp_path / "run")},
            "logger": {name: section[name] for name in loggers},
        }
    )
    for key, value in overrides.items():
        OmegaConf.update(cfg, key.replace("__", "."), value)
    return cfg


def rows(n: int = EPOCHS) -> list[dict]:
    return [
        dict(
            epoch=e,
            train_loss=2.0 / e,
            train_acc=0.3 + 0.1 * e,
            val_loss=2.1 / e,
            val_acc=0.25 + 0.1 * e,
            test_loss=2.2 / e,
            test_acc=0.2 + 0.1 * e,
            lr=0.003,
            epoch_time_s=1.5,
            train_samples_per_s=1000.0 * e,
        )
        for e in range(1, n + 1)
    ]


def fake_run(run_dir: Path, history: list[dict], status: str = runs.Status.COMPLETED) -> dict:
    """The files a finished run leaves (what finish() uploads), and its summary."""
    best = max(history, key=lambda r: r["val_acc"])
    summary = {
        "status": status,
        "reason": None if status == runs.Status.COMPLETED else "stopped",
        "objective": best["val_acc"],
        "best_epoch": best["epoch"],
        "best_val_acc": best["val_acc"],
        "best_val_loss": best["val_loss"],
        "test_acc": best["test_acc"],
        "test_loss": best["test_loss"],
        "epochs_completed": len(history),
        "train_samples_per_s": 2000.0,
        "wall_time_s": 4.5,
    }
    runs.write_metrics(run_dir, history)
    runs.write_summary(run_dir, summary)
    runs.atomic_write(run_dir / runs.CURVES_FILE, b"\x89PNG not really")
    runs.atomic_write(run_dir / runs.HYDRA_DIR / "config.yaml", "seed: 7\n")
    return summary


def run_synthetic(cfg, run_dir: Path, status: str = runs.Status.COMPLETED) -> None:
    history = rows()
    with open_loggers(cfg, run_dir) as loggers:
        for row in history:
            loggers.log_epoch(row)
        loggers.finish(fake_run(run_dir, history, status), run_dir)


def read_tensorboard(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc


def mlflow_runs(tracking_uri: str | Path, experiment: str = "rnnlab-test"):
    client = MlflowClient(tracking_uri=str(tracking_uri))
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} in {tracking_uri}"
    return client, client.search_runs([exp.experiment_id])


# --- composing the config group ----------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ([], ["csv"]),
        (["logger=tensorboard"], ["tensorboard"]),
        (["logger=[tensorboard,mlflow]"], ["tensorboard", "mlflow"]),
        (["logger=[csv,mlflow]"], ["csv", "mlflow"]),
    ],
)
def test_logger_group_composes_one_or_several(override, expected):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=override)
    assert list(cfg.logger) == expected
    if "mlflow" in expected:
        assert cfg.logger.mlflow.experiment_name == "rnnlab"
        # the default store sits under paths.output_root
        assert cfg.logger.mlflow._get_node("tracking_uri")._value() == (
            "${paths.output_root}/mlruns"
        )


def test_group_choice_check_accepts_lists(tmp_path):
    """train.py's quick check of group options understands logger=[a,b] and still names a
    bad option in one line."""
    from rnnlab.cli import check_group_choices

    check_group_choices(["logger=[tensorboard,mlflow]", "model=gru"], REPO / "conf")
    proc = subprocess.run(
        [sys.executable, "train.py", "logger=[tensorboard,wandb]"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "rnnlab: error: logger=wandb: no such option; choose one of csv, mlflow, tensorboard"
    ]


# --- csv only: nothing opened, nothing imported ------------------------------------------


def test_csv_only_opens_nothing_and_imports_no_logging_library(tmp_path):
    code = (
        "import sys; from pathlib import Path; from omegaconf import OmegaConf\n"
        "from rnnlab.loggers import open_loggers\n"
        f"cfg = OmegaConf.create({{'logger': {{'csv': {{}}}}, 'paths': {{}}}})\n"
        f"lg = open_loggers(cfg, Path({str(tmp_path)!r}))\n"
        "lg.log_epoch({'epoch': 1, 'train_loss': 1.0}); lg.finish({}, Path('.'))\n"
        "assert lg.names == [], lg.names\n"
        "heavy = [m for m in ('mlflow', 'tensorboard', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "lg = open_loggers(OmegaConf.create({'seed': 0}), Path('.'))\n"
        "assert lg.names == []\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert list(tmp_path.iterdir()) == []


# --- TensorBoard -------------------------------------------------------------------------


def test_tensorboard_scalars_per_epoch_and_hparams(tmp_path):
    cfg = make_cfg(tmp_path, "csv", "tensorboard")
    run_synthetic(cfg, tmp_path / "run")

    acc = read_tensorboard(tmp_path / "run" / "tensorboard")
    scalars = acc.Tags()["scalars"]
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc", "lr"):
        assert tag in scalars, (tag, scalars)
    assert "epoch_time_s" in scalars and "train_samples_per_s" in scalars
    val_acc = acc.Scalars("val/acc")
    assert [e.step for e in val_acc] == [1, 2, 3]
    assert [round(e.value, 6) for e in val_acc] == [0.35, 0.45, 0.55]
    assert [round(e.value, 6) for e in acc.Scalars("train/loss")] == [2.0, 1.0, round(2 / 3, 6)]
    assert acc.Scalars("final/best_val_acc")[-1].value == pytest.approx(0.55)

    # The HParams plugin's view: experiment (hparams and metrics), session start, end.
    content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert "final/objective" in {m.name.tag for m in experiment.metric_infos}
    hparam_names = {h.name for h in experiment.hparam_infos}
    assert {"model.cell", "model.hidden_size", "optimizer.lr", "seed"} <= hparam_names
    assert not any(n.startswith(("paths.", "logger.")) for n in hparam_names)
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.hparams["model.hidden_size"].number_value == 8
    assert start.hparams["model.cell"].string_value == "lstm"
    assert start.hparams["optimizer.betas"].string_value == "[0.9, 0.999]"
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.Status.Value("STATUS_SUCCESS")


def test_tensorboard_session_status_follows_the_run(tmp_path):
    run_synthetic(make_cfg(tmp_path, "tensorboard"), tmp_path / "run", runs.Status.DIVERGED)
    content = read_tensorboard(tmp_path / "run" / "tensorboard").PluginTagToContent("hparams")
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.Status.Value("STATUS_FAILURE")


def test_tensorboard_unwritable_log_dir_is_one_config_error(tmp_path):
    (tmp_path / "a_file").write_text("")
    cfg = make_cfg(
        tmp_path, "tensorboard", logger__tensorboard__log_dir=str(tmp_path / "a_file/tb")
    )
    with pytest.raises(ConfigError) as e:
        open_loggers(cfg, tmp_path / "run")
    message = str(e.value)
    assert message.startswith(f"logger.tensorboard.log_dir={tmp_path}/a_file/tb: cannot write")
    assert "\n" not in message


# --- MLflow ------------------------------------------------------------------------------


def test_mlflow_params_metrics_artifacts_and_status(tmp_path):
    cfg = make_cfg(tmp_path, "mlflow")
    run_synthetic(cfg, tmp_path / "run")

    client, found = mlflow_runs(tmp_path / "mlruns")
    assert len(found) == 1
    run = found[0]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "run"  # the run dir under paths.output_root
    assert run.data.tags["rnnlab.status"] == "completed"
    assert run.data.tags["rnnlab.run_dir"] == str((tmp_path / "run").resolve())
    params = run.data.params
    assert params["model.cell"] == "lstm"
    assert params["model.hidden_size"] == "8"
    assert params["optimizer.lr"] == "0.003"
    assert params["optimizer.betas"] == "[0.9, 0.999]"
    assert params["paths.output_dir"] == str(tmp_path / "run")
    assert params["resume"] == "null"
    assert not any(k.startswith("logger.") for k in params)

    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.35), (2, 0.45), (3, 0.55)]
    for key in ("train/loss", "test/acc", "lr", "train_samples_per_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == EPOCHS, key
    assert run.data.metrics["final/objective"] == pytest.approx(0.55)
    assert run.data.metrics["final/best_epoch"] == 3

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {runs.SUMMARY_FILE, runs.METRICS_FILE, runs.CURVES_FILE, runs.HYDRA_DIR} <= artifacts
    hydra = {a.path for a in client.list_artifacts(run.info.run_id, runs.HYDRA_DIR)}
    assert hydra == {f"{runs.HYDRA_DIR}/config.yaml"}
    local = client.download_artifacts(run.info.run_id, runs.SUMMARY_FILE, str(tmp_path))
    assert json.loads(Path(local).read_text())["best_epoch"] == 3


@pytest.mark.parametrize(
    ("status", "mlflow_status"),
    [
        (runs.Status.DIVERGED, "FAILED"),
        (runs.Status.FAILED, "FAILED"),
        (runs.Status.INTERRUPTED, "KILLED"),
        (runs.Status.PRUNED, "KILLED"),
    ],
)
def test_mlflow_status_maps_the_runs_status(tmp_path, status, mlflow_status):
    run_synthetic(make_cfg(tmp_path, "mlflow"), tmp_path / "run", status)
    _, found = mlflow_runs(tmp_path / "mlruns")
    assert found[0].info.status == mlflow_status
    assert found[0].data.tags["rnnlab.status"] == status
    assert found[0].data.tags["rnnlab.reason"] == "stopped"


def test_mlflow_run_closed_without_finish_is_killed(tmp_path):
    with open_loggers(make_cfg(tmp_path, "mlflow"), tmp_path / "run") as loggers:
        loggers.log_epoch(rows(1)[0])
    _, found = mlflow_runs(tmp_path / "mlruns")
    assert found[0].info.status == "KILLED"


@pytest.mark.parametrize(
    ("uri", "why"),
    [
        ("bogus-scheme://nowhere", "cannot open it"),
        # nothing listens on port 9
        ("http://rnnlab:s3cret@127.0.0.1:9", "cannot open it (Connection refused)"),
        ("{tmp}/a_file/mlruns", "cannot write there"),
    ],
)
def test_mlflow_bad_tracking_uri_is_one_config_error(tmp_path, uri, why):
    (tmp_path / "a_file").write_text("")
    uri = uri.format(tmp=tmp_path)
    cfg = make_cfg(tmp_path, "tensorboard", "mlflow", logger__mlflow__tracking_uri=uri)
    with pytest.raises(ConfigError) as e:
        open_loggers(cfg, tmp_path / "run")
    message = str(e.value)
    assert message.startswith("logger.mlflow.tracking_uri="), message
    assert why in message and "\n" not in message
    assert "s3cret" not in message


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////proc/mlflow.db",  # /proc: no file can be made there
        "sqlite:///{tmp}/a_file/mlflow.db",
        "postgresql://rnnlab:s3cret@127.0.0.1:9/mlflow",  # nothing listens on port 9
    ],
)
def test_mlflow_bad_database_store_fails_at_once_without_retrying(tmp_path, uri, caplog):
    """MLflow retries opening a database store with backoff for ~100 s; a typo is reported
    on the first try."""
    (tmp_path / "a_file").write_text("")
    uri = uri.format(tmp=tmp_path)
    cfg = make_cfg(tmp_path, "mlflow", logger__mlflow__tracking_uri=uri)
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigError) as e:
        open_loggers(cfg, tmp_path / "run")
    message = str(e.value)
    assert message.startswith("logger.mlflow.tracking_uri="), message
    assert "cannot open it (" in message and "\n" not in message
    assert "s3cret" not in message
    assert not [r for r in caplog.records if "will be retried" in r.getMessage()]


def test_mlflow_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run_synthetic(make_cfg(tmp_path, "mlflow", logger__mlflow__tracking_uri=uri), tmp_path / "run")
    client, found = mlflow_runs(uri)
    assert found[0].info.status == "FINISHED"
    # artifacts beside the database, not in ./mlruns of whatever folder the run started in
    assert found[0].info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())
    assert runs.SUMMARY_FILE in {a.path for a in client.list_artifacts(found[0].info.run_id)}
    assert len(client.get_metric_history(found[0].info.run_id, "train/acc")) == EPOCHS


def test_missing_package_is_one_config_error_naming_the_extra(tmp_path):
    # A process in which `import mlflow` fails, as where the extra is not installed.
    code = (
        "import sys; sys.modules['mlflow'] = None\n"
        "from pathlib import Path; from omegaconf import OmegaConf\n"
        "from rnnlab.errors import ConfigError; from rnnlab.loggers import open_loggers\n"
        "cfg = OmegaConf.create({'logger': {'mlflow': {'tracking_uri': 'x',"
        " 'experiment_name': 'e'}}})\n"
        "try:\n"
        "    open_loggers(cfg, Path('.'))\n"
        "except ConfigError as e:\n"
        "    print(e)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == (
        "logger=mlflow needs the mlflow-skinny package: pip install -e '.[mlflow]'"
    ), proc.stderr


def test_a_logger_failing_mid_run_warns_once_and_training_goes_on(tmp_path, caplog):
    import shutil

    cfg = make_cfg(tmp_path, "tensorboard", "mlflow")
    run_dir = tmp_path / "run"
    history = rows()
    loggers = open_loggers(cfg, run_dir)
    assert loggers.names == ["tensorboard", "mlflow"]
    loggers.log_epoch(history[0])
    shutil.rmtree(tmp_path / "mlruns")  # the store goes away under a running job
    with caplog.at_level(logging.WARNING, logger="rnnlab.loggers"):
        for row in history[1:]:
            loggers.log_epoch(row)
        loggers.finish(fake_run(run_dir, history), run_dir)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("logger.mlflow failed in log_epoch")
    assert "training goes on without it" in warnings[0]
    # the other logger carried on to the end
    acc = read_tensorboard(run_dir / "tensorboard")
    assert [e.step for e in acc.Scalars("val/acc")] == [1, 2, 3]
    assert "final/objective" in acc.Tags()["scalars"]


# --- the real thing ----------------------------------------------------------------------


def _train(data_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    return subprocess.run(
        [
            sys.executable,
            "train.py",
            *flags,
            "data=mnist_sample",
            "trainer.progress=false",
            "model.hidden_size=8",
            f"paths.data_dir={data_dir}",
            *overrides,
        ],
        cwd=REPO,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_train_py_with_tensorboard_and_mlflow(tmp_path, data_dir):
    proc = _train(
        data_dir,
        "trainer.epochs=2",
        "logger=[tensorboard,mlflow]",
        f"paths.output_root={tmp_path}",
        f"hydra.run.dir={tmp_path}/runs/one",
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "runs" / "one"
    summary = runs.read_summary(run_dir)
    assert summary["status"] == "completed"
    csv_rows = runs.read_metrics(run_dir)  # metrics.csv still written, as always

    acc = read_tensorboard(run_dir / "tensorboard")
    assert [(e.step, round(e.value, 6)) for e in acc.Scalars("val/acc")] == [
        (int(r["epoch"]), round(r["val_acc"], 6)) for r in csv_rows
    ]
    assert acc.Scalars("final/objective")[-1].value == pytest.approx(summary["objective"])

    client, found = mlflow_runs(tmp_path / "mlruns", "rnnlab")
    assert len(found) == 1
    run = found[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "runs/one"
    assert run.data.params["model.hidden_size"] == "8"
    assert run.data.params["data.name"] == "mnist_sample"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {runs.SUMMARY_FILE, runs.METRICS_FILE, runs.CURVES_FILE, runs.HYDRA_DIR} <= artifacts


@pytest.mark.slow
def test_multirun_logs_each_job_to_its_own_run(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    proc = _train(
        data_dir,
        "-m",
        "trainer.epochs=1",
        "seed=0,1",
        "logger=[tensorboard,mlflow]",
        f"paths.output_root={tmp_path}",
        f"hydra.sweep.dir={sweep}",
    )
    assert proc.returncode == 0, proc.stderr
    client, found = mlflow_runs(tmp_path / "mlruns", "rnnlab")
    assert sorted(r.data.params["seed"] for r in found) == ["0", "1"]
    assert {r.info.run_name for r in found} == {"sweep/0", "sweep/1"}
    assert all(r.info.status == "FINISHED" for r in found)
    for job in ("0", "1"):
        acc = read_tensorboard(sweep / job / "tensorboard")
        content = acc.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(
            content[metadata.SESSION_START_INFO_TAG]
        )
        assert start.hparams["seed"].number_value == int(job)


@pytest.mark.slow
def test_train_py_bad_tracking_uri_stops_before_training(tmp_path, data_dir):
    proc = _train(
        data_dir,
        "trainer.epochs=1",
        "logger=mlflow",
        "logger.mlflow.tracking_uri=bogus-scheme://nowhere",
        f"hydra.run.dir={tmp_path}/run",
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "rnnlab: error: logger.mlflow.tracking_uri=bogus-scheme://nowhere: cannot open it"
    ), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "run" / runs.METRICS_FILE).exists()  # no epoch ran
