"""GoogLeNet-GAP and InceptionV3-GAP: the Inception backbones of the CAM literature.

**GoogLeNet-GAP** (Zhou et al., CVPR 2016; Szegedy et al., CVPR 2015). CAM removes GoogLeNet's
layers after inception4e, giving a 14 x 14 map at 224 px, and adds a 3 x 3 convolution to 1024
channels with ReLU, global average pooling and a linear classifier. Chen & Hsu (saliency aware)
use it as their second encoder. Built from torchvision's GoogLeNet, whose convolutions carry
BatchNorm (the 2015 original did not). Stages: ``stem`` (conv1, pool1, conv2, conv3, pool2;
192 x 28 x 28), ``inception3a``, ``inception3b`` (480 x 28 x 28), ``pool3`` (14 x 14),
``inception4a`` .. ``inception4e`` (832 x 14 x 14); ``cam`` 1024 x 14 x 14.

**InceptionV3-GAP**, the CAM network of SPG (Zhang et al., ECCV 2018), ADL (Choe & Shim, CVPR
2019) and ``wsolevaluation`` (Choe et al., CVPR 2020, ``InceptionCam``): InceptionV3 cut after
Mixed_6e with the down-sampling reduced (stem convolution padded, stem max-pools with padding 1
and ``ceil_mode``, Mixed_6a with stride 1), then two 3 x 3 convolutions to 1024 channels, each
with ReLU and preceded by dropout 0.5, global average pooling and a linear classifier (the 1 x 1
classifier convolution of the reference is the same linear map applied before pooling; its dropout
after the second convolution is left out so that ``features["cam"]`` is the map the classifier
sees at evaluation). Stages: ``stem`` (to the second max-pool; 192 x 28 x 28 at 224 px),
``mixed_5b`` .. ``mixed_5d`` (288 x 28 x 28), ``pool3`` (3 x 3 max-pool, stride 2; the identity
with ``large_feature_map=True``), ``mixed_6a`` .. ``mixed_6e`` (768 x 14 x 14); ``cam`` 1024 x
14 x 14 (28 x 28 with ``large_feature_map``).

Without ImageNet weights every layer gets the Kaiming initialisation of the other backbones
(torchvision's truncated-normal initialisation of these two networks is many times slower to run).
torchvision's ImageNet weights for both were trained on inputs scaled to [-1, 1]; with
``transform_input`` (default: on when pretrained) the network first maps ImageNet-normalised
inputs to that scale, exactly as torchvision does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import GoogLeNet, Inception3

from .base import GAPNet, init_new_layers
from .pretrained import load_torchvision_state_dict

__all__ = ["googlenet_gap", "inceptionv3_gap"]


class TransformInput(nn.Module):
    """ImageNet-normalised input -> the [-1, 1] scale of torchvision's Inception weights.

    ``(N, 3, H, W) -> (N, 3, H, W)``: ``x * std / 0.5 + (mean - 0.5) / 0.5`` per channel.
    """

    def __init__(self) -> None:
        super().__init__()
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        self.register_buffer("scale", std / 0.5, persistent=False)
        self.register_buffer("shift", (mean - 0.5) / 0.5, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class _StrideOneReduction(nn.Module):
    """torchvision's InceptionB (Mixed_6a) with stride 1 and padding 1 in its three branches."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        for conv in (block.branch3x3.conv, block.branch3x3dbl_3.conv):
            conv.stride = (1, 1)
            conv.padding = (1, 1)
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        deep = b.branch3x3dbl_3(b.branch3x3dbl_2(b.branch3x3dbl_1(x)))
        return torch.cat([b.branch3x3(x), deep, F.max_pool2d(x, 3, stride=1, padding=1)], 1)


def _stem(transform: bool, *modules: nn.Module) -> nn.Sequential:
    return nn.Sequential(*(([TransformInput()] if transform else []) + list(modules)))


def googlenet_gap(
    num_classes: int,
    pretrained: bool | str = False,
    *,
    transform_input: bool | None = None,
    plugins: Mapping[str, nn.Module] | None = None,
    pooling: nn.Module | None = None,
) -> GAPNet:
    """Build GoogLeNet-GAP.

    Args:
        num_classes: number of classes ``C``.
        pretrained: ``True`` for torchvision's ImageNet weights (from the torch hub cache,
            downloaded there once if missing), or ``False``.
        transform_input: rescale ImageNet-normalised inputs as torchvision's weights expect;
            default ``bool(pretrained)``.
        plugins: ``{position: module}``, positions ``stem inception3a inception3b pool3
            inception4a inception4b inception4c inception4d inception4e``.
        pooling: replaces global average pooling.

    Returns:
        A :class:`~wsolkit.models.base.GAPNet`; ``features["cam"]`` is the added conv's output.
    """
    net = GoogLeNet(aux_logits=bool(pretrained), transform_input=False, init_weights=False)
    if pretrained:
        net.load_state_dict(load_torchvision_state_dict("googlenet", pretrained))
    else:
        init_new_layers(net)
    transform = bool(pretrained) if transform_input is None else transform_input
    stages = [("stem", _stem(transform, net.conv1, net.maxpool1, net.conv2, net.conv3, net.maxpool2)),
              ("inception3a", net.inception3a), ("inception3b", net.inception3b),
              ("pool3", net.maxpool3)]
    stages += [(f"inception4{c}", getattr(net, f"inception4{c}")) for c in "abcde"]
    channels = {"stem": 192, "inception3a": 256, "inception3b": 480, "pool3": 480,
                "inception4a": 512, "inception4b": 512, "inception4c": 512, "inception4d": 528,
                "inception4e": 832}
    head = nn.Sequential(nn.Conv2d(832, 1024, kernel_size=3, padding=1), nn.ReLU())
    init_new_layers(head)
    return GAPNet(
        "googlenet_gap", stages, head, 1024, num_classes,
        channels=channels, plugins=plugins, pooling=pooling,
    )


def inceptionv3_gap(
    num_classes: int,
    pretrained: bool | str = False,
    *,
    large_feature_map: bool = False,
    transform_input: bool | None = None,
    plugins: Mapping[str, nn.Module] | None = None,
    pooling: nn.Module | None = None,
) -> GAPNet:
    """Build InceptionV3-GAP.

    Args:
        num_classes: number of classes ``C``.
        pretrained: ``True`` for torchvision's ImageNet weights (from the torch hub cache,
            downloaded there once if missing), or ``False``.
        large_feature_map: skip the max-pool before Mixed_6a (28 x 28 CAM at 224 px).
        transform_input: rescale ImageNet-normalised inputs as torchvision's weights expect;
            default ``bool(pretrained)``.
        plugins: ``{position: module}``, positions ``stem mixed_5b mixed_5c mixed_5d pool3
            mixed_6a mixed_6b mixed_6c mixed_6d mixed_6e``.
        pooling: replaces global average pooling.

    Returns:
        A :class:`~wsolkit.models.base.GAPNet`; ``features["cam"]`` is the second added conv's
        output.
    """
    net = Inception3(aux_logits=bool(pretrained), transform_input=False, init_weights=False)
    if pretrained:
        net.load_state_dict(load_torchvision_state_dict("inception_v3", pretrained))
    else:
        init_new_layers(net)
    net.Conv2d_1a_3x3.conv.padding = (1, 1)
    transform = bool(pretrained) if transform_input is None else transform_input
    stem = _stem(
        transform, net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3,
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), net.Conv2d_3b_1x1, net.Conv2d_4a_3x3,
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
    )
    pool3 = nn.Identity() if large_feature_map else nn.MaxPool2d(3, stride=2, ceil_mode=True)
    stages = [("stem", stem), ("mixed_5b", net.Mixed_5b), ("mixed_5c", net.Mixed_5c),
              ("mixed_5d", net.Mixed_5d), ("pool3", pool3),
              ("mixed_6a", _StrideOneReduction(net.Mixed_6a))]
    stages += [(f"mixed_6{c}", getattr(net, f"Mixed_6{c}")) for c in "bcde"]
    channels = {"stem": 192, "mixed_5b": 256, "mixed_5c": 288, "mixed_5d": 288, "pool3": 288,
                "mixed_6a": 768, "mixed_6b": 768, "mixed_6c": 768, "mixed_6d": 768, "mixed_6e": 768}
    head = nn.Sequential(
        nn.Dropout(0.5), nn.Conv2d(768, 1024, kernel_size=3, padding=1), nn.ReLU(),
        nn.Dropout(0.5), nn.Conv2d(1024, 1024, kernel_size=3, padding=1), nn.ReLU(),
    )
    init_new_layers(head)
    return GAPNet(
        "inceptionv3_gap", stages, head, 1024, num_classes,
        channels=channels, plugins=plugins, pooling=pooling,
    )


# The plug-in positions, in forward order; they do not depend on the input-size options.
googlenet_gap.positions = ("stem", "inception3a", "inception3b", "pool3", "inception4a",
                           "inception4b", "inception4c", "inception4d", "inception4e")
inceptionv3_gap.positions = ("stem", "mixed_5b", "mixed_5c", "mixed_5d", "pool3", "mixed_6a",
                             "mixed_6b", "mixed_6c", "mixed_6d", "mixed_6e")
