"""Hide-and-Seek (Singh & Lee, ICCV 2017): hide random grid patches of each training image.

The image is divided into a grid of ``S x S`` patches (anchored at the top-left corner; the last
row and column may be narrower) and every patch is hidden independently with probability ``p``
(0.5 in the paper). Hidden pixels are set to the mean pixel value of the training data, so that a
first-layer filter sees the same expected input whether or not its receptive field was hidden
(the paper's section 3.2). Hiding happens at training time only; the network sees whole images at
test time, and must have learnt to use more than the single most discriminative part.

In a configuration: ``TrainConfig(method={"hide_and_seek": {"patch": 16, "p": 0.5}})``, a batch
transform that :func:`wsolkit.train.fit` applies to the *normalised* batch, on the device.
When the normalisation uses the training data's own mean, that mean is 0, hence ``fill=0.0`` by
default; to hide on un-normalised ``[0, 1]`` images pass the mean colour as ``fill``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from wsolkit.methods.registry import MethodParts, register_method

__all__ = ["HideAndSeek", "hide_patches"]


def hide_patches(
    images: torch.Tensor,
    patch_size: int,
    p: float,
    *,
    fill: float | Sequence[float] | torch.Tensor = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Hide each ``patch_size x patch_size`` grid cell of each image with probability ``p``.

    Args:
        images: ``(N, C, H, W)`` float tensor (any device).
        patch_size: grid cell side ``S`` in pixels; 0 hides nothing.
        p: probability that a cell is hidden, in ``[0, 1]``.
        fill: value of hidden pixels: a scalar or one value per channel (``(C,)``).
        generator: random generator on ``images.device``; the global one if ``None``.

    Returns:
        A new ``(N, C, H, W)`` tensor, same dtype and device; ``images`` is not modified. Cell
        ``(i, j)`` covers rows ``i*S .. min((i+1)*S, H) - 1`` and columns likewise.
    """
    if images.ndim != 4:
        raise ValueError(f"hide_patches: images must be (N, C, H, W), got shape {tuple(images.shape)}.")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"hide_patches: p must be in [0, 1], got {p!r}.")
    if patch_size < 0:
        raise ValueError(f"hide_patches: patch_size must be >= 0, got {patch_size!r}.")
    if patch_size == 0 or p == 0.0:
        return images.clone()
    n, c, h, w = images.shape
    gh, gw = math.ceil(h / patch_size), math.ceil(w / patch_size)
    hidden = torch.rand((n, 1, gh, gw), generator=generator, device=images.device) < p
    hidden = hidden.repeat_interleave(patch_size, 2).repeat_interleave(patch_size, 3)[:, :, :h, :w]
    fill_t = torch.as_tensor(fill, dtype=images.dtype, device=images.device)
    if fill_t.ndim == 1:
        if fill_t.numel() != c:
            raise ValueError(f"hide_patches: fill has {fill_t.numel()} values for {c} channels.")
        fill_t = fill_t.view(1, c, 1, 1)
    elif fill_t.ndim != 0:
        raise ValueError(f"hide_patches: fill must be a scalar or (C,), got shape {tuple(fill_t.shape)}.")
    return torch.where(hidden, fill_t, images)


class HideAndSeek(nn.Module):
    """Hide-and-Seek as a batch transform: ``(N, C, H, W) -> (N, C, H, W)``.

    Args:
        patch_size: grid cell side; or a sequence of sizes, one drawn uniformly per call (the
            paper's mixed-size variant; 0 in the sequence means "hide nothing" for that batch).
        p: probability of hiding each cell.
        fill: value of hidden pixels (see the module docstring).

    Hides on every call: :func:`wsolkit.train.fit` calls it on training batches only.
    """

    def __init__(
        self, patch_size: int | Sequence[int] = 16, p: float = 0.5, fill: float | Sequence[float] = 0.0
    ) -> None:
        super().__init__()
        sizes = (patch_size,) if isinstance(patch_size, int) else tuple(int(s) for s in patch_size)
        if not sizes or min(sizes) < 0:
            raise ValueError(f"HideAndSeek: patch_size must be >= 0 (or a non-empty sequence), got {patch_size!r}.")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"HideAndSeek: p must be in [0, 1], got {p!r}.")
        self.sizes = sizes
        self.p = float(p)
        self.fill = fill

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        size = self.sizes[0]
        if len(self.sizes) > 1:
            k = torch.randint(len(self.sizes), (), generator=generator, device=images.device)
            size = self.sizes[int(k)]
        return hide_patches(images, size, self.p, fill=self.fill, generator=generator)

    def extra_repr(self) -> str:
        return f"patch_size={self.sizes if len(self.sizes) > 1 else self.sizes[0]}, p={self.p}, fill={self.fill}"


def build(model: nn.Module, config, patch: int | Sequence[int] = 16, p: float = 0.5,
          fill: float | Sequence[float] = 0.0) -> MethodParts:
    """Hide-and-Seek as the run's batch transform (``patch``: grid cell side or sizes)."""
    return MethodParts(batch_transform=HideAndSeek(patch, p, fill))


register_method("hide_and_seek", build)
