"""rnnlab.steps and rnnlab.gpu on a CUDA device: graphs give eager's numbers, the last
shorter batch runs eagerly, a scheduler's new lr is recaptured, bf16 trains, the memory cap
holds. Skipped (one line each) where there is no CUDA: run them on a GPU machine with
benchmarks/gpu_check.sh."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from rnnlab import gpu, runs
from rnnlab.steps import GraphedStep, make_train_step, wants_cuda_graphs
from stepping import build, compose_train, run_epochs, train_batches

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
EPOCHS = 3


@pytest.fixture(autouse=True)
def deterministic():
    """As training's configure_torch sets up CUDA (trainer.deterministic=true, the default)."""
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield


def eager_and_graphed(data_dir, *overrides, n=None):
    """The same run twice from the same seed: eager, then with cuda_graphs=true."""
    results = {}
    for graphs in (False, True):
        cfg = compose_train(data_dir, *overrides, f"trainer.cuda_graphs={graphs}")
        batches = train_batches(cfg, CUDA, n=n)
        model, opt = build(cfg, CUDA, capturable=wants_cuda_graphs(cfg.trainer, CUDA))
        step = make_train_step(model, opt, cfg.trainer, CUDA)
        results[graphs] = (run_epochs(step, batches, EPOCHS), model, step)
    return results[False], results[True]


def assert_close_params(a, b, rtol=1e-4, atol=1e-5):
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_graphs_give_the_eager_numbers(data_dir, cell, caplog):
    with caplog.at_level(logging.WARNING, logger="rnnlab.steps"):
        (eager_losses, eager_model, _), (graph_losses, graph_model, step) = eager_and_graphed(
            data_dir, f"model={cell}", "trainer.grad_clip_norm=0.05"
        )
    # Captured, not fallen back: on failure the warning says which part cannot be captured.
    assert isinstance(step, GraphedStep) and step.cuda_graphs, caplog.text
    assert step.fallback is None
    torch.testing.assert_close(graph_losses, eager_losses, rtol=1e-4, atol=1e-5)
    assert_close_params(eager_model, graph_model)


def test_last_shorter_batch_runs_eagerly_and_counts(data_dir):
    # 3,500 training digits at batch 64: 54 full batches and one of 44, every epoch.
    cfg = compose_train(data_dir, "trainer.cuda_graphs=true")
    batches = train_batches(cfg, CUDA)
    assert len(batches.y) % 64 == 44
    (eager_losses, eager_model, _), (graph_losses, graph_model, step) = eager_and_graphed(data_dir)
    assert step.static[0].shape[0] == 64 and step.cuda_graphs
    assert step.steps_done == EPOCHS * len(batches)  # every batch trained, the tail included
    torch.testing.assert_close(graph_losses, eager_losses, rtol=1e-4, atol=1e-5)
    assert_close_params(eager_model, graph_model)


def test_scheduler_lr_change_is_recaptured(data_dir):
    results = {}
    for graphs in (False, True):
        cfg = compose_train(data_dir, f"trainer.cuda_graphs={graphs}")
        batches = train_batches(cfg, CUDA, n=640)
        model, opt = build(cfg, CUDA, capturable=graphs)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
        step = make_train_step(model, opt, cfg.trainer, CUDA)
        results[graphs] = (run_epochs(step, batches, EPOCHS, sched), model)
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-4, atol=1e-5)
    assert_close_params(results[False][1], results[True][1])


def test_bf16_trains_on_cuda_close_to_fp32(data_dir):
    losses = {}
    for precision in ("fp32", "bf16"):
        for graphs in (False, True):
            cfg = compose_train(
                data_dir, f"trainer.precision={precision}", f"trainer.cuda_graphs={graphs}"
            )
            batches = train_batches(cfg, CUDA)
            model, opt = build(cfg, CUDA, capturable=graphs)
            step = make_train_step(model, opt, cfg.trainer, CUDA)
            losses[precision, graphs] = run_epochs(step, batches, EPOCHS)
            assert step.cuda_graphs is graphs, step.fallback
    bf16 = losses["bf16", False]
    assert bf16[-1] < 0.7 * bf16[0]
    for a, b in zip(losses["fp32", False], bf16, strict=True):
        assert abs(a - b) <= 0.05 * a, losses
    torch.testing.assert_close(losses["bf16", True], bf16, rtol=1e-3, atol=1e-4)


def test_sgd_is_not_capturable_and_falls_back_with_one_warning(data_dir, caplog):
    cfg = compose_train(data_dir, "optimizer=sgd", "trainer.cuda_graphs=true")
    model, opt = build(cfg, CUDA, capturable=True)
    with caplog.at_level(logging.WARNING, logger="rnnlab.steps"):
        step = make_train_step(model, opt, cfg.trainer, CUDA)
        run_epochs(step, train_batches(cfg, CUDA, n=256), 1)
    assert [r.getMessage() for r in caplog.records] == [
        "trainer.cuda_graphs=true: SGD has no capturable mode (Adam and AdamW have); "
        "training eagerly"
    ]


class SyncsInForward(torch.nn.Module):
    """A model that reads a value back to the host in its forward: not capturable."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.batch_first = model, model.batch_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().sum().item() < 0:  # never true; the .item() is the point
            x = -x
        return self.inner(x)


def test_capture_failure_warns_once_and_trains_eagerly_with_the_same_numbers(data_dir, caplog):
    results = {}
    for graphs in (False, True):
        cfg = compose_train(data_dir, f"trainer.cuda_graphs={graphs}")
        model, opt = build(cfg, CUDA, capturable=graphs)
        model = SyncsInForward(model)
        step = make_train_step(model, opt, cfg.trainer, CUDA)
        with caplog.at_level(logging.WARNING, logger="rnnlab.steps"):
            results[graphs] = (run_epochs(step, train_batches(cfg, CUDA, n=640), 2), model, step)
    step = results[True][2]
    assert not step.cuda_graphs and step.fallback.startswith("capture failed: ")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("trainer.cuda_graphs=true: capture failed")
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-4, atol=1e-5)
    assert_close_params(results[False][1], results[True][1])


def test_memory_fraction_caps_this_process():
    torch.cuda.empty_cache()
    gpu.reset_peak(CUDA)
    total = torch.cuda.get_device_properties(CUDA).total_memory
    cap_mb = gpu.limit_memory(CUDA, 0.05)
    try:
        assert cap_mb == pytest.approx(0.05 * total / 2**20, rel=1e-3)
        small = torch.empty(int(0.01 * total), dtype=torch.uint8, device=CUDA)
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(int(0.06 * total), dtype=torch.uint8, device=CUDA)
        assert gpu.peak_memory_mb(CUDA) >= 0.01 * total / 2**20
        del small
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, CUDA)
        torch.cuda.empty_cache()


@pytest.mark.slow
def test_cli_run_with_graphs_bf16_and_a_memory_cap(run_train, tmp_path):
    run_dir = tmp_path / "run"
    run_train(
        "data=mnist_sample",
        "trainer.progress=false",
        "trainer.epochs=2",
        "trainer.device=cuda",
        "trainer.cuda_graphs=true",
        "trainer.precision=bf16",
        "trainer.gpu_memory_fraction=0.1",
        f"hydra.run.dir={run_dir}",
        timeout=300,
        check=True,
    )
    s = json.loads((run_dir / runs.SUMMARY_FILE).read_text())
    assert s["status"] == runs.Status.COMPLETED and s["best_val_acc"] > 0.3
    assert s["precision"] == "bf16" and s["cuda_graphs"] is True, s["cuda_graphs_fallback"]
    total_mb = torch.cuda.get_device_properties(CUDA).total_memory / 2**20
    assert 0 < s["peak_gpu_memory_mb"] <= 0.1 * total_mb
    assert "peak GPU memory" in (run_dir / runs.LOG_FILE).read_text()
