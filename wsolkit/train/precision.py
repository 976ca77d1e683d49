"""Precision and memory layout: bf16 autocast where the hardware computes bf16, channels-last."""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from .config import TrainConfig

__all__ = ["NATIVE_BF16_ENV", "autocast", "cpu_has_native_bf16", "resolved_amp",
           "use_channels_last"]

#: Set to ``0`` to treat this CPU as one without native bf16 (``amp="auto"`` then trains in
#: fp32), so that a machine with AVX512-BF16 or AMX can measure what most CPUs run; ``1``
#: claims native bf16. Unset: detected.
NATIVE_BF16_ENV = "WSOL_NATIVE_BF16"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), unless the environment
    variable :data:`NATIVE_BF16_ENV` says otherwise.

    Without either, oneDNN emulates bf16 and autocast makes CPU training slower, not faster.
    """
    setting = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if setting:
        if setting not in ("0", "1"):
            raise ValueError(f"{NATIVE_BF16_ENV}={setting!r}: expected 0 (treat the CPU as "
                             "without native bf16), 1 (with it), or unset (detect)")
        return setting == "1"
    return _detected_native_bf16()


@functools.cache
def _detected_native_bf16() -> bool:
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
