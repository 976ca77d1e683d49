"""A toy method that uses every part a method can contribute, for the tests.

It is shaped like the methods of the remaining chapters: a plug-in in the backbone, an auxiliary
head that reads two stages (as a decoder with skips does), a loss against a per-image target
with a ramped weight (a pseudo saliency map), a frozen network that only a loss uses (a
perceptual network), a loss that pairs images of one class (hence a batch sampler), and a score
map of its own. ``toy_data`` is the command line's data factory (``--data toy_method:toy_data``
with this folder on ``PYTHONPATH``): importing this module registers the method.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsolkit.methods import ClassGroupSampler, LossTerm, MethodParts, TargetSpec, linear_ramp, register_method
from wsolkit.train import toy_data as _toy_data

NAME = "toy_everything"


class ChannelScale(nn.Module):
    """A learnable per-channel scale: a plug-in with parameters."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x):
        return x * self.scale


class TwoStageHead(nn.Module):
    """Reads ``block2`` and ``cam``: one map at ``block2``'s resolution, in ``[0, 1]``."""

    def __init__(self, fine: int, coarse: int) -> None:
        super().__init__()
        self.fine, self.coarse = nn.Conv2d(fine, 1, 1), nn.Conv2d(coarse, 1, 1)

    def forward(self, features):
        fine = self.fine(features["block2"])
        coarse = F.interpolate(self.coarse(features["cam"]), size=fine.shape[-2:], mode="nearest")
        return {"map": torch.sigmoid(fine + coarse)}


def band_target(rgb: np.ndarray) -> np.ndarray:
    """The toy images' class band: where some channel is saturated."""
    return (rgb.max(axis=2) == 255).astype(np.float32)


def _upsampled(features, like):
    return F.interpolate(features["toy_head"]["map"].float(), size=like.shape[-2:], mode="bilinear",
                         align_corners=False)


def target_loss(logits, labels, features, ctx):
    return F.mse_loss(_upsampled(features, ctx.images), ctx.targets["band"])


def perceptual_loss(logits, labels, features, ctx):
    probe = ctx.model.frozen["probe"]
    masked = ctx.images * _upsampled(features, ctx.images)
    return F.mse_loss(probe(masked).float(), probe(ctx.images).float())


def pair_loss(logits, labels, features, ctx):
    if not torch.equal(labels[0::2], labels[1::2]):
        raise AssertionError(f"a batch without class pairs: {labels.tolist()}")
    pooled = features["cam"].float().mean(dim=(2, 3))
    return (pooled[0::2] - pooled[1::2]).pow(2).mean()


def toy_head_map(model, features, classes):
    return features["toy_head"]["map"][:, 0]


def build(model, config, ramp_epochs: float = 1.0, per_class: int = 2) -> MethodParts:
    probe = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    return MethodParts(
        plugins={"pool1": ChannelScale(model.channels["pool1"])},
        heads={"toy_head": TwoStageHead(model.channels["block2"], model.channels["cam"])},
        frozen={"probe": probe},
        losses={"target": LossTerm(target_loss, linear_ramp(ramp_epochs)),
                "perceptual": LossTerm(perceptual_loss, 0.1),
                "pairs": LossTerm(pair_loss, 0.01)},
        batch_sampler=ClassGroupSampler(per_class, config.batch_size),
        targets={"band": TargetSpec(band_target, "toy-band-v1")},
    )


register_method(NAME, build, maps={"toy_head_map": toy_head_map})


def toy_data(config):
    """The toy sets of :func:`wsolkit.train.toy_data`, with this method's targets."""
    return _toy_data(config)
