"""The optimizer and the learning-rate schedule from the config.

`optimizer._target_` must name a torch.optim.Optimizer; with neither `fused` nor `foreach`
set, the fused kernel is used where torch has one for the device (one kernel per step
instead of several per parameter tensor). Building and stepping it does not import
torch._dynamo (rnnlab.dynamo_seam).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict

from rnnlab.dynamo_seam import defer_dynamo
from rnnlab.errors import ConfigError

# What a bad optimizer/scheduler setting raises (an unknown or wrong-typed argument, a value
# torch refuses). Nothing broader: an error from elsewhere (a signal handler's, say) must
# keep its own type and words, not become a config error.
_BAD_SETTING = (InstantiationException, TypeError, ValueError)

# torch's optimizers that take fused=True (on the devices of fused_kernel_devices()).
FUSED_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def build_optimizer(
    opt_cfg: DictConfig, params: Any, device: torch.device, capturable: bool = False
) -> torch.optim.Optimizer:
    """The optimizer `opt_cfg` names over `params`.

    capturable=True (for trainer.cuda_graphs, see rnnlab.steps.wants_cuda_graphs) builds it
    so that its step can be captured in a CUDA graph: the step count lives on the device and
    no step reads it back to the host. Optimizers without such a mode are built as usual and
    the step falls back to eager with a warning.
    """
    cls = optimizer_class(opt_cfg._target_)
    # torch.optim would import torch._dynamo (seconds of start-up) for nothing in eager mode.
    defer_dynamo(cls)
    opt_cfg = opt_cfg.copy()
    with open_dict(opt_cfg):
        for flag in ("fused", "foreach"):
            if flag in opt_cfg and opt_cfg[flag] is None:
                del opt_cfg[flag]
        if "fused" not in opt_cfg and "foreach" not in opt_cfg and fused_supported(cls, device):
            opt_cfg.fused = True
        if capturable and takes_capturable(cls):
            opt_cfg.capturable = True
    try:
        return instantiate(opt_cfg)(params)
    except _BAD_SETTING as e:
        raise ConfigError(f"optimizer ({opt_cfg._target_}): {_cause(e)}") from None


def build_scheduler(sched_cfg: DictConfig | None, optimizer: torch.optim.Optimizer) -> Any:
    if not sched_cfg:
        return None
    try:
        return instantiate(sched_cfg)(optimizer)
    except _BAD_SETTING as e:
        raise ConfigError(f"scheduler ({sched_cfg.get('_target_')}): {_cause(e)}") from None


def optimizer_class(target: Any) -> type[torch.optim.Optimizer]:
    """The class `optimizer._target_` names; ConfigError unless it is an Optimizer."""
    allowed = "a torch.optim.Optimizer class such as torch.optim.AdamW"
    try:
        cls = get_class(str(target))
    except Exception:
        raise ConfigError(
            f"optimizer._target_={target} is not allowed: no such class; expected {allowed}"
        ) from None
    if not issubclass(cls, torch.optim.Optimizer):
        raise ConfigError(
            f"optimizer._target_={target} is not allowed: not an optimizer; expected {allowed}"
        )
    return cls


def takes_capturable(cls: type) -> bool:
    """Whether the optimizer class has a `capturable` argument (Adam, AdamW, ...; not SGD)."""
    return "capturable" in inspect.signature(cls.__init__).parameters


def fused_supported(cls: type, device: torch.device) -> bool:
    return cls in FUSED_OPTIMIZERS and device.type in fused_kernel_devices()


def fused_kernel_devices() -> frozenset[str]:
    """Device types with fused optimizer kernels.

    torch says so only through a private helper; this is the one place that uses it
    (tests/test_training.py checks that fused=True really steps on each device it names,
    so a torch that changes it is caught). Without it: CUDA, which has had them longest.
    """
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return frozenset(_get_fused_kernels_supported_devices())
    except (ImportError, AttributeError, TypeError):
        return frozenset({"cuda"})


def _cause(e: BaseException) -> str:
    """The first line of the innermost error (Hydra wraps instantiation errors)."""
    while e.__cause__ is not None:
        e = e.__cause__
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
