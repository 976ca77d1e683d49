"""Precision and memory layout: bf16 autocast where the hardware computes bf16, channels-last."""

from __future__ import annotations

import contextlib
import functools

import torch

from .config import TrainConfig

__all__ = ["autocast", "cpu_has_native_bf16", "resolved_amp", "use_channels_last"]


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX).

    Without either, oneDNN emulates bf16 and autocast makes CPU training slower, not faster.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolved_amp(config: TrainConfig, device: torch.device | str) -> str:
    """The precision ``config.amp`` gives on ``device``: ``"bf16"`` or ``"off"``.

    ``"auto"`` is bf16 autocast on CUDA and on CPUs with native bf16 (where it measured about
    2x faster for the default-profile models, see ``benchmarks/README.md``), fp32 elsewhere.
    """
    device = torch.device(device)
    if config.amp != "auto":
        return config.amp
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return "bf16"
    return "off"


def autocast(config: TrainConfig, device: torch.device):
    """bf16 autocast where :func:`resolved_amp` says so, else a context that does nothing."""
    if resolved_amp(config, device) == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Whether the run keeps images and weights channels-last (``config.channels_last``)."""
    if config.channels_last == "auto":
        return device.type in ("cuda", "cpu")
    return bool(config.channels_last)
