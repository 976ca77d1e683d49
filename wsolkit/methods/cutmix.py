"""CutMix (Yun et al., ICCV 2019): paste a box of another training image, mix the labels by area.

For a training batch, CutMix draws ``lambda ~ Beta(beta, beta)`` and one permutation of the
batch, cuts a box of the image's height and width times ``sqrt(1 - lambda)`` at a uniformly
drawn centre (clipped at the border), and replaces that box of every image with the same box
of its partner in the permutation. ``lambda`` is then recomputed as the share of the image the
box left untouched, and the classification loss becomes
``lambda * CE(logits, y) + (1 - lambda) * CE(logits, y[perm])``. With probability ``1 - p`` a
batch is left whole (plain cross-entropy). Nothing changes at test time: the score map is the
plain CAM. Like Hide-and-Seek, the network must classify from any part of the object, because
any part may be pasted over; unlike it, the hidden part is filled with another class's pixels.

The box follows the reference implementation of Choe et al.'s re-evaluation (``wsolevaluation``,
``wsol/method/cutmix.py``): the cut side is truncated to an integer, and the box spans
``centre - side // 2`` to ``centre + side // 2`` on each axis, so its side is even before
clipping. Their defaults are ``beta = 1`` and ``p = 1`` (every batch mixed), as here.

In a configuration: ``TrainConfig(method={"cutmix": {"beta": 1.0, "p": 1.0}})``. The method
contributes a batch transform and the classification loss that reads the transform's mixing of
the same step (a loss given a batch the transform did not mix is an error, not a silent plain
cross-entropy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsolkit.methods.registry import MethodParts, register_method

__all__ = ["CutMix", "Mixing", "cut_box", "cutmix_loss", "mix_batch"]


@dataclass(frozen=True)
class Mixing:
    """One batch's mixing: its partner of every image and the untouched share.

    Attributes:
        perm: ``(N,)`` long tensor, image ``i``'s box comes from image ``perm[i]``.
        lam: the share of every image outside the box, in ``[0, 1]`` (1: not mixed).
        box: ``(top, left, bottom, right)`` in pixels, bottom and right exclusive.
    """

    perm: torch.Tensor
    lam: float
    box: tuple[int, int, int, int]


def cut_box(height: int, width: int, lam: float, centre: tuple[int, int]) -> tuple[int, int, int, int]:
    """The box ``(top, left, bottom, right)`` that covers about ``1 - lam`` of the image.

    Args:
        height, width: the image's size in pixels.
        lam: the share to keep, in ``[0, 1]``.
        centre: ``(row, column)`` of the box's centre, inside the image.

    Returns:
        Sides ``int(size * sqrt(1 - lam))`` halved down on each side of the centre and clipped
        to the image (the reference's rule), so the box can be empty.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"cut_box: lam must be in [0, 1], got {lam!r}.")
    row, col = centre
    if not (0 <= row < height and 0 <= col < width):
        raise ValueError(f"cut_box: centre {centre} outside a {height}x{width} image.")
    ratio = math.sqrt(1.0 - lam)
    half_h, half_w = int(height * ratio) // 2, int(width * ratio) // 2
    return (max(row - half_h, 0), max(col - half_w, 0),
            min(row + half_h, height), min(col + half_w, width))


def mix_batch(images: torch.Tensor, beta: float, p: float = 1.0) -> tuple[torch.Tensor, Mixing]:
    """Cut and paste one box between the images of a batch.

    Args:
        images: ``(N, C, H, W)`` float tensor (any device, any memory format).
        beta: the Beta distribution's parameter (``> 0``).
        p: the probability that the batch is mixed at all.

    Every draw comes from torch's global generator, which :func:`wsolkit.train.fit` seeds per
    epoch, so a resumed run mixes as an uninterrupted one.

    Returns:
        ``(mixed, mixing)``: a new tensor (``images`` is not modified) and the :class:`Mixing`
        its loss needs.
    """
    if images.ndim != 4:
        raise ValueError(f"mix_batch: images must be (N, C, H, W), got shape {tuple(images.shape)}.")
    if not beta > 0.0:
        raise ValueError(f"mix_batch: beta must be > 0, got {beta!r}.")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"mix_batch: p must be in [0, 1], got {p!r}.")
    n, _, h, w = images.shape
    identity = torch.arange(n, device=images.device)
    # p = 0 draws nothing, so that such a run trains exactly the CAM network.
    if p == 0.0 or (p < 1.0 and float(torch.rand(())) >= p):
        return images.clone(), Mixing(identity, 1.0, (0, 0, 0, 0))
    lam = float(torch.distributions.Beta(float(beta), float(beta)).sample())
    centre = int(torch.randint(h, ())), int(torch.randint(w, ()))
    perm = torch.randperm(n).to(images.device)
    top, left, bottom, right = box = cut_box(h, w, lam, centre)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[perm, :, top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, Mixing(perm, kept, box)


def cutmix_loss(logits: torch.Tensor, labels: torch.Tensor, mixing: Mixing) -> torch.Tensor:
    """``lam * CE(logits, labels) + (1 - lam) * CE(logits, labels[perm])`` (batch means)."""
    logits = logits.float()
    own = F.cross_entropy(logits, labels)
    if mixing.lam >= 1.0:
        return own
    partner = F.cross_entropy(logits, labels[mixing.perm.to(labels.device)])
    return mixing.lam * own + (1.0 - mixing.lam) * partner


class CutMix(nn.Module):
    """CutMix as a batch transform, with the loss of the batch it last mixed.

    Args:
        beta: the Beta distribution's parameter.
        p: the probability that a batch is mixed.
    """

    def __init__(self, beta: float = 1.0, p: float = 1.0) -> None:
        super().__init__()
        if not beta > 0.0:
            raise ValueError(f"CutMix: beta must be > 0, got {beta!r}.")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"CutMix: p must be in [0, 1], got {p!r}.")
        self.beta, self.p = float(beta), float(p)
        self._last: tuple[torch.Tensor, Mixing] | None = None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mixed, mixing = mix_batch(images, self.beta, self.p)
        self._last = (mixed, mixing)
        return mixed

    def loss(self, logits, labels, features, ctx) -> torch.Tensor:
        """The classification loss of :func:`wsolkit.train.fit`: the mixing of the batch
        ``ctx.images`` was made by the last call of this transform."""
        if self._last is None or self._last[0] is not ctx.images:
            raise RuntimeError("CutMix.loss: this batch was not mixed by this CutMix transform "
                               "(its loss needs the transform's permutation and lambda).")
        return cutmix_loss(logits, labels, self._last[1])

    def extra_repr(self) -> str:
        return f"beta={self.beta}, p={self.p}"


def build(model: nn.Module, config, beta: float = 1.0, p: float = 1.0) -> MethodParts:
    """CutMix as the run's batch transform and classification loss."""
    mixer = CutMix(beta, p)
    return MethodParts(batch_transform=mixer, classification_loss=mixer.loss)


register_method("cutmix", build)
