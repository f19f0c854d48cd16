"""rnnlab.steps on CPU: the fp32 step is today's loop body to the bit, bf16 trains, and
cuda_graphs=true falls back with one warning; the new trainer keys are checked."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from rnnlab import gpu, runs
from rnnlab.config import ConfigError, validate
from rnnlab.optim import build_optimizer
from rnnlab.steps import GraphedStep, TrainStep, make_train_step, wants_cuda_graphs
from stepping import build, compose_train, plain_loop_step, run_epochs, same_params, train_batches

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Steps of this size are per-op overhead: on a busy machine a second thread only waits."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    "overrides",
    [
        ("model=rnn",),
        ("model=lstm", "trainer.grad_clip_norm=0.05"),
        ("model=gru", "model.batch_first=false"),
        ("model=rnn", "optimizer=sgd", "trainer.grad_clip_norm=0.05"),
    ],
    ids=["rnn", "lstm-clip", "gru-seq-first", "rnn-sgd-clip"],
)
def test_fp32_step_equals_the_plain_loop(data_dir, overrides):
    cfg = compose_train(data_dir, *overrides)
    batches = train_batches(cfg, CPU, n=640)
    clip = cfg.trainer.grad_clip_norm
    model_a, opt_a = build(cfg, CPU)
    model_b, opt_b = build(cfg, CPU)
    step = make_train_step(model_b, opt_b, cfg.trainer, CPU)
    assert type(step) is TrainStep and step.precision == "fp32"

    batch_list = list(batches)
    for x, y in batch_list:
        loss_a, logits_a = plain_loop_step(model_a, opt_a, x, y, clip)
        loss_b, logits_b = step(x, y)
        assert torch.equal(loss_a, loss_b) and torch.equal(logits_a, logits_b)
        assert not loss_b.requires_grad and not logits_b.requires_grad
    assert same_params(model_a, model_b)


def test_bf16_on_cpu_trains_and_stays_close_to_fp32(data_dir):
    cfg = compose_train(data_dir, "model=rnn")
    batches = train_batches(cfg, CPU, n=1280)
    runs_ = {}
    for precision in ("fp32", "bf16"):
        with open_dict(cfg):
            cfg.trainer.precision = precision
        model, opt = build(cfg, CPU)
        step = make_train_step(model, opt, cfg.trainer, CPU)
        batches.generator.manual_seed(cfg.seed)
        runs_[precision] = (run_epochs(step, batches, epochs=2), model)
    (fp32, _), (bf16, m16) = runs_["fp32"], runs_["bf16"]
    # The weights stay float32 and learn: the second epoch's loss is well below the first.
    assert all(p.dtype == torch.float32 for p in m16.parameters())
    assert bf16[1] < 0.9 * bf16[0]
    # bf16 keeps ~3 significant digits: the losses agree to a few percent, not to the bit.
    assert bf16 != fp32
    assert all(abs(a - b) <= 0.05 * a for a, b in zip(fp32, bf16, strict=True)), (fp32, bf16)


def test_bf16_autocasts_the_forward_on_cpu(data_dir):
    cfg = compose_train(data_dir, "trainer.precision=bf16")
    model, opt = build(cfg, CPU)
    step = make_train_step(model, opt, cfg.trainer, CPU)
    x, y = next(iter(train_batches(cfg, CPU, n=64)))
    _, logits = step(x, y)
    assert logits.dtype == torch.bfloat16  # the head's matmul ran in bf16
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_cuda_graphs_on_cpu_warn_once_and_give_the_eager_numbers(data_dir, caplog):
    cfg = compose_train(data_dir, "trainer.cuda_graphs=true")
    batches = train_batches(cfg, CPU, n=320)
    assert not wants_cuda_graphs(cfg.trainer, CPU)
    model_a, opt_a = build(cfg, CPU)
    model_b, opt_b = build(cfg, CPU)
    eager = make_train_step(model_a, opt_a, compose_train(data_dir).trainer, CPU)
    with caplog.at_level(logging.WARNING, logger="rnnlab.steps"):
        step = make_train_step(model_b, opt_b, cfg.trainer, CPU)
        for x, y in batches:
            assert torch.equal(eager(x, y)[0], step(x, y)[0])
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "trainer.cuda_graphs=true: CUDA graphs need a CUDA device, this run is on cpu; "
        "training eagerly"
    ]
    assert not isinstance(step, GraphedStep) and same_params(model_a, model_b)
    assert step.describe() == {
        "precision": "fp32",
        "cuda_graphs": False,
        "cuda_graphs_fallback": "CUDA graphs need a CUDA device, this run is on cpu",
    }


def test_capturable_optimizer_only_where_the_class_has_it(data_dir):
    cfg = compose_train(data_dir)
    model, _ = build(cfg, CPU)
    adam = build_optimizer(cfg.optimizer, model.parameters(), CPU, capturable=True)
    assert all(g["capturable"] for g in adam.param_groups)
    assert not build_optimizer(cfg.optimizer, model.parameters(), CPU).param_groups[0]["capturable"]
    sgd_cfg = compose_train(data_dir, "optimizer=sgd").optimizer
    sgd = build_optimizer(sgd_cfg, model.parameters(), CPU, capturable=True)
    assert "capturable" not in sgd.param_groups[0]


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("trainer.precision=fp16", "expected fp32 or bf16"),
        ("trainer.precision=null", "expected fp32 or bf16"),
        ("trainer.cuda_graphs=yes", "expected true or false"),
        ("trainer.gpu_memory_fraction=0", "expected a number in (0, 1] or null"),
        ("trainer.gpu_memory_fraction=1.5", "expected a number in (0, 1] or null"),
    ],
)
def test_bad_values_name_the_key(data_dir, override, allowed):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}=") as e:
        validate(compose_train(data_dir, override))
    assert allowed in str(e.value) and "\n" not in str(e.value)


def test_good_values_pass_and_old_configs_without_the_keys_too(data_dir):
    validate(compose_train(data_dir, "trainer.precision=bf16", "trainer.cuda_graphs=true"))
    validate(compose_train(data_dir, "trainer.gpu_memory_fraction=0.25"))
    cfg = compose_train(data_dir)
    with open_dict(cfg):  # a run saved before these keys existed (resume=...)
        for key in ("precision", "cuda_graphs", "gpu_memory_fraction"):
            del cfg.trainer[key]
    validate(cfg)
    assert make_train_step(*build(cfg, CPU), cfg.trainer, CPU).describe()["precision"] == "fp32"


def test_memory_helpers_do_nothing_on_cpu():
    assert gpu.limit_memory(CPU, 0.5) is None
    assert gpu.peak_memory_mb(CPU) is None
    gpu.reset_peak(CPU)


def test_summary_has_the_step_fields():
    s = runs.Summary.start({"optimized_metric": "val/acc", "seed": 0}, {})
    d = s.to_dict()
    for key in ("precision", "cuda_graphs", "cuda_graphs_fallback", "peak_gpu_memory_mb"):
        assert key in d and d[key] is None


@pytest.mark.slow
def test_cli_refuses_a_bad_precision_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "data=mnist_sample",
            "trainer.precision=fp16",
            f"paths.data_dir={tmp_path}",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0] == (
        "rnnlab: error: trainer.precision='fp16' is not allowed: expected fp32 or bf16"
    )


@pytest.mark.slow
def test_cli_run_records_how_its_step_ran(run_train, tmp_path):
    """Needs training.py wired to rnnlab.steps and rnnlab.gpu (see steps.py)."""
    run_dir = tmp_path / "run"
    run_train(
        "data=mnist_sample",
        "trainer.progress=false",
        "trainer.epochs=1",
        "trainer.device=cpu",
        "trainer.precision=bf16",
        "trainer.cuda_graphs=true",
        f"hydra.run.dir={run_dir}",
        timeout=240,
        check=True,
    )
    s = json.loads((run_dir / runs.SUMMARY_FILE).read_text())
    assert s["status"] == runs.Status.COMPLETED and s["best_val_acc"] > 0.2
    assert s["precision"] == "bf16" and s["cuda_graphs"] is False
    assert s["cuda_graphs_fallback"] == "CUDA graphs need a CUDA device, this run is on cpu"
    assert s["peak_gpu_memory_mb"] is None
    log_text = (run_dir / runs.LOG_FILE).read_text()
    assert log_text.count("trainer.cuda_graphs=true: CUDA graphs need a CUDA device") == 1
