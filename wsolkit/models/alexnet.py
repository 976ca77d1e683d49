"""AlexNet-GAP (Zhou et al., CVPR 2016; Krizhevsky et al., NeurIPS 2012).

CAM removes AlexNet's layers after conv5 (pool5 and the fully connected layers), giving a
13 x 13 map at 224 px, and adds a 3 x 3 convolution (stride 1, padding 1) to 1024 channels with
ReLU, global average pooling and a linear classifier. The saliency-aware paper of Chen & Hsu
(section 3.1) uses this network as its encoder. The convolutions are torchvision's one-tower
AlexNet (64/192/384/256/256 channels), whose ImageNet weights load unchanged.

Stages: ``pool1`` (conv1, pool1; 64 x 27 x 27), ``pool2`` (conv2, pool2; 192 x 13 x 13),
``conv3`` (384), ``conv4`` (256), ``conv5`` (256, 13 x 13); ``cam`` 1024 x 13 x 13.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .base import GAPNet, init_new_layers
from .pretrained import load_torchvision_state_dict

__all__ = ["alexnet_gap"]


def _features() -> nn.Sequential:
    # Layer for layer torchvision's AlexNet.features, so its state dict keys match.
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
    )


def alexnet_gap(
    num_classes: int,
    pretrained: bool | str = False,
    *,
    plugins: Mapping[str, nn.Module] | None = None,
    pooling: nn.Module | None = None,
) -> GAPNet:
    """Build AlexNet-GAP.

    Args:
        num_classes: number of classes ``C``.
        pretrained: ``True`` for torchvision's ImageNet weights (from the torch hub cache,
            downloaded there once if missing), or ``False``.
        plugins: ``{position: module}``, positions ``pool1 pool2 conv3 conv4 conv5``.
        pooling: replaces global average pooling.

    Returns:
        A :class:`~wsolkit.models.base.GAPNet`; ``features["cam"]`` is the added conv's output.
    """
    features = _features()
    if pretrained:
        state = load_torchvision_state_dict("alexnet", pretrained)
        features.load_state_dict(
            {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        )
    else:
        init_new_layers(features)
    bounds = [("pool1", 0, 3), ("pool2", 3, 6), ("conv3", 6, 8), ("conv4", 8, 10), ("conv5", 10, 12)]
    stages = [(name, nn.Sequential(*features[a:b])) for name, a, b in bounds]
    head = nn.Sequential(nn.Conv2d(256, 1024, kernel_size=3, padding=1), nn.ReLU())
    init_new_layers(head)
    channels = {"pool1": 64, "pool2": 192, "conv3": 384, "conv4": 256, "conv5": 256}
    return GAPNet(
        "alexnet_gap", stages, head, 1024, num_classes,
        channels=channels, plugins=plugins, pooling=pooling,
    )


# The plug-in positions, in forward order; they do not depend on width or input-size options.
alexnet_gap.positions = ("pool1", "pool2", "conv3", "conv4", "conv5")
