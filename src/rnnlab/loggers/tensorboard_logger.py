"""logger=tensorboard: event files through torch.utils.tensorboard (the tensorboard extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rnnlab.errors import ConfigError
from rnnlab.loggers.common import (
    NOT_HPARAMS,
    check_writable,
    final_metrics,
    flat_config,
    metric_tag,
)
from rnnlab.runs import Status

# The event files' folder in the run dir unless logger.tensorboard.log_dir says otherwise.
TENSORBOARD_DIR = "tensorboard"
# The HParams plugin's session end states (tensorboard.plugins.hparams.api_pb2.Status).
TB_STATUS = {
    Status.COMPLETED: "STATUS_SUCCESS",
    Status.PRUNED: "STATUS_ABORTED",
    Status.INTERRUPTED: "STATUS_ABORTED",
    Status.DIVERGED: "STATUS_FAILURE",
    Status.FAILED: "STATUS_FAILURE",
}


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
        check_writable(Path(log_dir), "logger.tensorboard.log_dir")
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
