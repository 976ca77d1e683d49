"""``simple_gap``: the 4-block prototype network of the synthetic benchmark.

Four blocks of conv3x3 + BatchNorm + ReLU (widths 16, 32, 64, 128), a 2 x 2 max-pool after
blocks 1-3, global average pooling and a linear classifier: an 8 x 8 CAM at 64 px. It trains on
two CPU cores in minutes and already shows the failure CAM is known for (the map concentrates on
the most discriminative part of the object).

Stages: ``block1 pool1 block2 pool2 block3 pool3 block4``; ``features["cam"]`` is block4's output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from .base import GAPNet, init_new_layers

__all__ = ["simple_gap"]


def _block(cin: int, cout: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def simple_gap(
    num_classes: int,
    pretrained: bool | str = False,
    *,
    widths: Sequence[int] = (16, 32, 64, 128),
    batch_norm: bool = True,
    plugins: Mapping[str, nn.Module] | None = None,
    pooling: nn.Module | None = None,
) -> GAPNet:
    """Build the prototype network.

    Args:
        num_classes: number of classes ``C``.
        pretrained: must be ``False`` (there are no pre-trained weights for this network).
        widths: channels of the four blocks.
        batch_norm: ``False`` gives conv + bias + ReLU blocks (useful where BatchNorm's batch
            statistics would get in the way, e.g. comparing data-parallel and single-process runs).
        plugins: ``{position: module}``, positions ``block1 pool1 block2 pool2 block3 pool3 block4``.
        pooling: replaces global average pooling.

    Returns:
        A :class:`~wsolkit.models.base.GAPNet`; ``features["cam"]`` is block4's output.
    """
    if pretrained:
        raise ValueError("simple_gap has no pre-trained weights; build it with pretrained=False.")
    widths = tuple(int(w) for w in widths)
    if len(widths) != 4 or min(widths) < 1:
        raise ValueError(f"simple_gap: widths must be 4 positive ints, got {widths!r}.")
    stages: list[tuple[str, nn.Module]] = []
    channels: dict[str, int] = {}
    cin = 3
    for i, w in enumerate(widths, start=1):
        stages.append((f"block{i}", _block(cin, w, batch_norm)))
        channels[f"block{i}"] = w
        if i < 4:
            stages.append((f"pool{i}", nn.MaxPool2d(2)))
            channels[f"pool{i}"] = w
        cin = w
    for _, module in stages:
        init_new_layers(module)
    return GAPNet(
        "simple_gap", stages, nn.Identity(), widths[3], num_classes,
        channels=channels, plugins=plugins, pooling=pooling,
    )


# The plug-in positions, in forward order; they do not depend on width or input-size options.
simple_gap.positions = ("block1", "pool1", "block2", "pool2", "block3", "pool3", "block4")
