"""Checks on the composed config, run before any data is loaded.

Each bad value stops the run with one line that names the key, the value and what is
allowed. Hydra already rejects unknown keys (struct mode) and unknown group options.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rnnlab.errors import ConfigError
from rnnlab.runs import OPTIMIZED_METRICS

# Kept free of torch imports so that a bad value is reported within a second.
CELLS = ("rnn", "lstm", "gru")
# model.kernel: "auto" lets rnnlab pick its faster CPU kernel where it has one (rnnlab.kernels).
KERNELS = ("auto", "torch")
PRECISIONS = ("fp32", "bf16")  # trainer.precision (rnnlab.steps)
MNIST_TRAIN_SIZE = 60_000
SAMPLE_SIZE = 5_000


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, int | float) and not isinstance(v, bool)) and math.isfinite(v)


def _check(
    cfg: DictConfig, key: str, ok: Callable[[Any], bool], allowed: str, optional: bool = False
) -> Any:
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True)
    except Exception as e:  # missing (???) or a broken interpolation
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}; expected {allowed}") from None
    if value is None and optional:
        return None
    if not ok(value):
        raise ConfigError(f"{key}={value!r} is not allowed: expected {allowed}")
    return value


def int_at_least(lo: int) -> Callable[[Any], bool]:
    return lambda v: _is_int(v) and v >= lo


def number_in(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False):
    def ok(v: Any) -> bool:
        if not _is_number(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    return ok


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that cannot work."""
    _check(cfg, "seed", lambda v: _is_int(v) and 0 <= v < 2**63, "an integer >= 0")
    _check(
        cfg,
        "optimized_metric",
        lambda v: v in OPTIMIZED_METRICS,
        f"one of {', '.join(OPTIMIZED_METRICS)}",
    )
    _check(
        cfg,
        "resume",
        lambda v: isinstance(v, str) and v != "",
        "a run directory path",
        optional=True,
    )

    m = "model"
    _check(cfg, f"{m}.cell", lambda v: v in CELLS, f"one of {', '.join(CELLS)}")
    _check(cfg, f"{m}.input_size", lambda v: v == 28, "28 (one MNIST row per step)")
    _check(cfg, f"{m}.hidden_size", int_at_least(1), "an integer >= 1")
    _check(cfg, f"{m}.num_layers", int_at_least(1), "an integer >= 1")
    _check(cfg, f"{m}.batch_first", is_bool, "true or false")
    _check(cfg, f"{m}.bidirectional", is_bool, "true or false")
    _check(cfg, f"{m}.dropout", number_in(0, 1, hi_open=True), "a number in [0, 1)")
    _check(cfg, f"{m}.num_classes", lambda v: v == 10, "10 (MNIST digits)")
    if cfg.model.cell == "rnn":
        _check(cfg, f"{m}.nonlinearity", lambda v: v in ("tanh", "relu"), "tanh or relu")
    if cfg.model.get("kernel") is not None:
        _check(cfg, f"{m}.kernel", lambda v: v in KERNELS, f"one of {', '.join(KERNELS)}")

    d = "data"
    name = _check(
        cfg, f"{d}.name", lambda v: v in ("mnist", "mnist_sample"), "mnist or mnist_sample"
    )
    _check(cfg, f"{d}.batch_size", int_at_least(1), "an integer >= 1")
    _check(cfg, f"{d}.eval_batch_size", int_at_least(1), "an integer >= 1")
    _check(cfg, f"{d}.split_seed", lambda v: _is_int(v) and 0 <= v < 2**63, "an integer >= 0")
    _check(
        cfg,
        f"{d}.augment_shift",
        lambda v: _is_int(v) and 0 <= v <= 27,
        "an integer from 0 (off) to 27 pixels",
        optional=True,
    )
    _check(cfg, f"{d}.mean", number_in(-1e6, 1e6), "a finite number")
    _check(cfg, f"{d}.std", number_in(0, 1e6, lo_open=True), "a number > 0")
    if name == "mnist":
        _check(
            cfg,
            f"{d}.val_size",
            lambda v: _is_int(v) and 1 <= v < MNIST_TRAIN_SIZE,
            f"an integer from 1 to {MNIST_TRAIN_SIZE - 1} (held out of the "
            f"{MNIST_TRAIN_SIZE:,} training images)",
        )
        for flag in ("download", "verify_md5", "strict"):
            _check(cfg, f"{d}.{flag}", is_bool, "true or false")
        _check(cfg, f"{d}.root", lambda v: isinstance(v, str) and v != "", "a folder path")
        _check(
            cfg,
            f"{d}.cache_dir",
            lambda v: isinstance(v, str) and v != "",
            "a folder path",
            optional=True,
        )
    else:
        test = _check(
            cfg,
            f"{d}.test_size",
            lambda v: _is_int(v) and 1 <= v < SAMPLE_SIZE,
            f"an integer from 1 to {SAMPLE_SIZE - 1}",
        )
        _check(
            cfg,
            f"{d}.val_size",
            lambda v: _is_int(v) and 1 <= v < SAMPLE_SIZE - test,
            f"an integer from 1 to {SAMPLE_SIZE - test - 1} ({SAMPLE_SIZE} digits minus "
            f"data.test_size={test}, leaving at least one to train on)",
        )

    o = "optimizer"
    _check(cfg, f"{o}._target_", lambda v: isinstance(v, str), "an optimizer class path")
    _check(cfg, f"{o}.lr", number_in(0, math.inf, lo_open=True), "a number > 0")
    if "weight_decay" in cfg.optimizer:
        _check(cfg, f"{o}.weight_decay", number_in(0, math.inf), "a number >= 0")
    if "momentum" in cfg.optimizer:
        _check(cfg, f"{o}.momentum", number_in(0, 1), "a number in [0, 1]")
    for flag in ("foreach", "fused"):
        if flag in cfg.optimizer:
            _check(cfg, f"{o}.{flag}", is_bool, "true, false or null", optional=True)

    t = "trainer"
    _check(cfg, f"{t}.epochs", int_at_least(1), "an integer >= 1")
    _check(cfg, f"{t}.device", _is_device, "auto, cpu, cuda or cuda:N")
    _check(cfg, f"{t}.num_threads", int_at_least(1), "an integer >= 1 or null", optional=True)
    _check(
        cfg,
        f"{t}.grad_clip_norm",
        number_in(0, math.inf, lo_open=True),
        "a number > 0 or null",
        optional=True,
    )
    _check(cfg, f"{t}.deterministic", is_bool, "true or false")
    _check(cfg, f"{t}.progress", lambda v: v in ("auto", True, False), "auto, true or false")
    _check(cfg, f"{t}.divergence_check_every", int_at_least(1), "an integer >= 1")
    _check(cfg, f"{t}.save_checkpoints", is_bool, "true or false")
    # Newer keys: a run saved before them (resume=...) has none, and gets the defaults.
    if "precision" in cfg.trainer:
        _check(cfg, f"{t}.precision", lambda v: v in PRECISIONS, " or ".join(PRECISIONS))
    if "cuda_graphs" in cfg.trainer:
        _check(cfg, f"{t}.cuda_graphs", is_bool, "true or false")
    if "gpu_memory_fraction" in cfg.trainer:
        _check(
            cfg,
            f"{t}.gpu_memory_fraction",
            number_in(0, 1, lo_open=True),
            "a number in (0, 1] or null",
            optional=True,
        )


def _is_device(v: Any) -> bool:
    if v in ("auto", "cpu", "cuda"):
        return True
    return isinstance(v, str) and v.startswith("cuda:") and v[5:].isdigit()
