"""One training step: forward, loss, backward, optional clipping, optimizer step.

`make_train_step(model, optimizer, cfg.trainer, device)` returns a callable `step(x, y) ->
(loss, logits)`, both detached, that does what the training loop's body did inline:

    logits = model(x); loss = cross_entropy(logits, y)
    optimizer.zero_grad(set_to_none=True); loss.backward()
    clip_grad_norm_(params, trainer.grad_clip_norm, foreach=True)   # when set
    optimizer.step()

Two variants come from the config:

- `trainer.precision=bf16`: forward and loss under torch.autocast(device.type, bfloat16);
  the weights, gradients and optimizer state stay float32 (bf16 has float32's range, so no
  GradScaler). On CPU, autocast runs nn.RNN's and nn.GRU's matrix products in bf16 (GRU's
  hidden state stays float32) and nn.LSTM through oneDNN's bf16 layer.
- `trainer.cuda_graphs=true` (CUDA only): after a few eager warm-up steps on a side stream,
  the whole step (forward, backward, clipping, optimizer step) is captured once into a CUDA
  graph and replayed with each batch copied into static input tensors. This needs an
  optimizer built with capturable=True (`build_optimizer(..., capturable=True)`). The last,
  shorter batch of an epoch runs eagerly: it is 1 step in ~860 on MNIST, while a second
  graph would double the graph's memory and need the two graphs to share their pool in
  strict replay order. When the optimizer's hyperparameters change (a learning-rate
  scheduler) the graph is captured again, since replay would keep the captured values.
  Where capture cannot work (not CUDA, an optimizer that is not capturable, capture
  failing), one warning says why and the step runs eagerly: same numbers, no speed-up.

The (loss, logits) a graphed step returns are its static output tensors: valid until the
next call (the loop reads them at once, into its on-device sums).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rnnlab import gpu

log = logging.getLogger(__name__)

# Eager steps before capture: they initialise the optimizer's state, cuBLAS/cuDNN handles and
# the autograd engine's streams, as torch's CUDA-graph notes ask (they use 3).
WARMUP_STEPS = 3


def wants_cuda_graphs(trainer_cfg: Any, device: torch.device) -> bool:
    """Whether the run will try to capture its step: then the optimizer must be capturable."""
    return bool(trainer_cfg.get("cuda_graphs", False)) and device.type == "cuda"


class TrainStep:
    """The eager step (and the base of the graphed one): see the module's docstring."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        clip: float | None,
        device: torch.device,
        precision: str = "fp32",
    ) -> None:
        self.model, self.optimizer, self.clip = model, optimizer, clip
        self.device, self.precision = device, precision
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.cuda_graphs = False  # True once a graph is captured and replayed
        self.fallback: str | None = None  # why cuda_graphs=true runs eagerly

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.eager(x, y)

    def eager(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.model.batch_first:
            x = x.transpose(0, 1)  # (seq, batch, feature), as such a model expects
        with self.autocast():
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def autocast(self, cache_enabled: bool = True) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(
                self.device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled
            )
        return contextlib.nullcontext()

    def describe(self) -> dict[str, Any]:
        """What ran, for summary.json."""
        return {
            "precision": self.precision,
            "cuda_graphs": self.cuda_graphs,
            "cuda_graphs_fallback": self.fallback,
        }


class GraphedStep(TrainStep):
    """The step captured once into a CUDA graph and replayed (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stream = torch.cuda.Stream(self.device)  # warm-up and capture run here
        self.steps_done = 0  # all steps, however they ran
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, ...] = ()  # x, y, loss, logits
        self.captured_settings: list[dict[str, Any]] = []

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self._step(x, y)
        self.steps_done += 1
        return out

    def _step(self, x, y):
        if self.fallback is not None:
            return self.quiet_eager(x, y)
        if self.graph is not None and x.shape == self.static[0].shape:
            if self._settings() == self.captured_settings:
                static_x, static_y, loss, logits = self.static
                static_x.copy_(x)
                static_y.copy_(y)
                self.graph.replay()
                return loss, logits
            return self._capture_and_replay(x, y)  # the scheduler changed the lr
        if self.graph is not None or self.steps_done < WARMUP_STEPS:
            # Warm-up, or the epoch's last (shorter) batch: eager, on the side stream so
            # that the autograd engine's streams match those of the capture.
            return self._eager_on_side_stream(x, y)
        return self._capture_and_replay(x, y)

    def _eager_on_side_stream(self, x, y):
        main = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(main)
        with torch.cuda.stream(self.stream):
            loss, logits = self.quiet_eager(x, y)
        main.wait_stream(self.stream)
        # Made on the side stream, used and freed on the main one: tell the allocator.
        loss.record_stream(main)
        logits.record_stream(main)
        return loss, logits

    def _capture_and_replay(self, x, y):
        self.graph, self.static = None, ()  # frees an earlier graph's pool first
        try:
            static_x, static_y = x.clone(), y.clone()
            # Gradients must be allocated inside the capture, from the graph's pool, so
            # that each replay's backward writes them at the addresses its step reads.
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.graph(graph, stream=self.stream):
                loss, logits = self._captured_step(static_x, static_y)
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
        except Exception as e:  # any capture failure: say why once, then train eagerly
            torch.cuda.synchronize(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            self._fall_back(f"capture failed: {_first_line(e)}")
            return self.quiet_eager(x, y)
        self.graph, self.static = graph, (static_x, static_y, loss, logits)
        self.captured_settings = self._settings()
        self.cuda_graphs = True
        graph.replay()  # capture only records: this replay is the step for (x, y)
        return loss, logits

    def quiet_eager(self, x, y):
        """The eager step, without torch's warning that a capturable optimizer is stepped
        outside a capture (warm-up, the last batch and the fallback do so on purpose)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This instance was constructed with capt")
            return self.eager(x, y)

    def _captured_step(self, x, y):
        # Autocast's weight cache would keep casts made during capture alive past it.
        if not self.model.batch_first:
            x = x.transpose(0, 1)
        with self.autocast(cache_enabled=False):
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip, foreach=True)
        self.optimizer.step()
        return loss.detach(), logits.detach()

    def _settings(self) -> list[dict[str, Any]]:
        """The optimizer's hyperparameters, which a captured graph holds as constants."""
        return [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]

    def _fall_back(self, reason: str) -> None:
        self.fallback = reason
        self.cuda_graphs = False
        log.warning("trainer.cuda_graphs=true: %s; training eagerly", reason)


def make_train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, trainer_cfg: Any, device: torch.device
) -> TrainStep:
    """The training step `trainer_cfg` asks for (precision, cuda_graphs, grad_clip_norm)."""
    precision = trainer_cfg.get("precision", "fp32") or "fp32"
    clip = trainer_cfg.get("grad_clip_norm")
    if not trainer_cfg.get("cuda_graphs", False):
        return TrainStep(model, optimizer, clip, device, precision)
    reason = graphs_unsupported(optimizer, device)
    if reason is not None:
        step = TrainStep(model, optimizer, clip, device, precision)
        step.fallback = reason
        log.warning("trainer.cuda_graphs=true: %s; training eagerly", reason)
        return step
    return GraphedStep(model, optimizer, clip, device, precision)


def graphs_unsupported(optimizer: torch.optim.Optimizer, device: torch.device) -> str | None:
    """Why the step cannot be captured on `device` with `optimizer`; None when it can be tried."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, this run is on {device.type}"
    groups = optimizer.param_groups
    if not all(g.get("capturable", False) for g in groups):
        name = type(optimizer).__name__
        if not all("capturable" in g for g in groups):
            return f"{name} has no capturable mode (Adam and AdamW have)"
        return f"{name} was built without capturable=True"
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def record(summary: Any, step: TrainStep | None) -> None:
    """Put how the step ran, and the peak GPU memory, into `summary` (runs.Summary); log it."""
    if step is None:
        return
    for key, value in step.describe().items():
        setattr(summary, key, value)
    summary.peak_gpu_memory_mb = gpu.peak_memory_mb(step.device)
    if summary.peak_gpu_memory_mb is not None:
        log.info(
            "peak GPU memory: %.1f MB (%s, cuda_graphs %s)",
            summary.peak_gpu_memory_mb,
            step.precision,
            "on" if step.cuda_graphs else "off",
        )
