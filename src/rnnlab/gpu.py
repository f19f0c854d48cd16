"""GPU memory for several trials sharing one GPU: a cap per process, and the peak it used.

`limit_memory(device, trainer.gpu_memory_fraction)` at set-up caps this process's share of
the device (torch's caching allocator raises torch.OutOfMemoryError past it, which the run
reports as out of memory), and `peak_memory_mb(device)` at the end says what it used. On
CPU both do nothing (None).
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def limit_memory(device: torch.device, fraction: float | None) -> float | None:
    """Cap this process at `fraction` of `device`'s memory; returns the cap in MB (or None)."""
    if fraction is None or device.type != "cuda":
        return None
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    total = torch.cuda.get_device_properties(device).total_memory
    cap_mb = round(fraction * total / 2**20, 1)
    log.info("GPU memory capped at %.0f MB (trainer.gpu_memory_fraction=%s)", cap_mb, fraction)
    return cap_mb


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """The most memory torch's allocator held for tensors on `device` since the last reset."""
    if device.type != "cuda" or not torch.cuda.is_initialized():
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
