"""The training device: which one, how torch is set up on it, and running out of memory."""

from __future__ import annotations

import os
import platform

import torch

from rnnlab.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.device={name}: CUDA is not available on this machine; "
            "use trainer.device=auto or cpu"
        )
    return device


def configure_torch(device: torch.device, num_threads: int | None, deterministic: bool) -> None:
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    if deterministic and device.type == "cuda":
        # cuBLAS needs a fixed workspace for deterministic results; cuDNN its deterministic RNNs.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def out_of_memory(e: BaseException) -> str | None:
    """What ran out, in one line, when `e` is an allocation failure; None otherwise.

    CUDA raises torch.OutOfMemoryError; the CPU allocator a plain RuntimeError saying
    "can't allocate memory".
    """
    text = str(e)
    if isinstance(e, torch.OutOfMemoryError | MemoryError) or "can't allocate memory" in text:
        detail = text.split("DefaultCPUAllocator: ")[-1].splitlines()[0] if text else ""
        return f"out of memory ({detail})" if detail else "out of memory"
    return None
