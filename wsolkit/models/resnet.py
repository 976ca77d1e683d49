"""ResNet50-GAP (He et al., CVPR 2016), as in the CAM baseline of Choe et al. (CVPR 2020).

The ResNet-50 trunk (stem and ``layer1``-``layer4`` of torchvision's Bottleneck blocks, so that
torchvision's ImageNet weights load unchanged) followed by global average pooling and a linear
classifier; no layer is added before the pooling, ``features["cam"]`` is ``layer4``'s output.
``wsolevaluation``'s ``ResNetCam`` sets the stride of ``layer4`` to 1, which doubles the CAM
resolution (14 x 14 at 224 px instead of 7 x 7); that is the default here (``layer4_stride=1``).
Its "large feature map" option also sets ``layer3``'s stride to 1 (28 x 28): ``layer3_stride=1``.

Stages: ``stem`` (conv1, bn1, ReLU, max-pool), ``layer1`` .. ``layer4``; channels 64, 256, 512,
1024, 2048 at width 1.

The reduced variant scales every width by ``width``; ``small_input=True`` drops the stem's max-pool
so that a 64 px input gives an 8 x 8 CAM (stride 8 instead of 16).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from torch import nn
from torchvision.models.resnet import Bottleneck

from .base import GAPNet, check_width, init_new_layers
from .pretrained import load_torchvision_state_dict

__all__ = ["resnet50_gap"]


def _make_layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    # Same module names and shapes as torchvision's ResNet._make_layer (ResNet v1.5: the stride
    # sits in the 3x3 convolution), so its state dict keys match.
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
        )
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def resnet50_gap(
    num_classes: int,
    pretrained: bool | str = False,
    *,
    width: float = 1.0,
    layer3_stride: int = 2,
    layer4_stride: int = 1,
    small_input: bool = False,
    plugins: Mapping[str, nn.Module] | None = None,
    pooling: nn.Module | None = None,
) -> GAPNet:
    """Build ResNet50-GAP.

    Args:
        num_classes: number of classes ``C``.
        pretrained: ``True`` (torchvision IMAGENET1K_V1), ``"IMAGENET1K_V2"``, or ``False``.
            Weights come from the torch hub cache (downloaded once if missing), full width only.
        width: channel multiplier (0.25 gives a 512-channel CAM).
        layer3_stride: 1 or 2.
        layer4_stride: 1 (default, as ``wsolevaluation``) or 2 (torchvision's original).
        small_input: drop the stem's max-pool (for 64-96 px inputs).
        plugins: ``{position: module}``, positions ``stem layer1 layer2 layer3 layer4``.
        pooling: replaces global average pooling.

    Returns:
        A :class:`~wsolkit.models.base.GAPNet`; ``features["cam"]`` is ``layer4``'s output.
    """
    check_width("resnet50_gap", width, pretrained)
    for name, s in (("layer3_stride", layer3_stride), ("layer4_stride", layer4_stride)):
        if s not in (1, 2):
            raise ValueError(f"resnet50_gap: {name} must be 1 or 2, got {s!r}.")
    base = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
    stem_channels = base[0]
    trunk = nn.Module()
    trunk.conv1 = nn.Conv2d(3, stem_channels, kernel_size=7, stride=2, padding=3, bias=False)
    trunk.bn1 = nn.BatchNorm2d(stem_channels)
    inplanes = stem_channels
    strides = (1, 2, layer3_stride, layer4_stride)
    for i, (planes, blocks, stride) in enumerate(zip(base, (3, 4, 6, 3), strides), start=1):
        setattr(trunk, f"layer{i}", _make_layer(inplanes, planes, blocks, stride))
        inplanes = planes * Bottleneck.expansion
    if pretrained:
        state = load_torchvision_state_dict("resnet50", pretrained)
        trunk.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    else:
        init_new_layers(trunk)
    maxpool = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    stem = nn.Sequential(
        OrderedDict(conv1=trunk.conv1, bn1=trunk.bn1, relu=nn.ReLU(inplace=True), maxpool=maxpool)
    )
    stages = [("stem", stem)] + [(f"layer{i}", getattr(trunk, f"layer{i}")) for i in range(1, 5)]
    channels = {"stem": stem_channels}
    channels.update({f"layer{i}": c * Bottleneck.expansion for i, c in enumerate(base, start=1)})
    return GAPNet(
        "resnet50_gap", stages, nn.Identity(), channels["layer4"], num_classes,
        channels=channels, plugins=plugins, pooling=pooling,
    )


# The plug-in positions, in forward order; they do not depend on width or input-size options.
resnet50_gap.positions = ("stem", "layer1", "layer2", "layer3", "layer4")
