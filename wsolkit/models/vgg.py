"""VGG16-GAP (Zhou et al., CVPR 2016; Simonyan & Zisserman, ICLR 2015), full size and reduced.

CAM removes VGG16's layers after conv5_3 (pool5 and the fully connected layers), which leaves a
14 x 14 map at 224 px, and adds a 3 x 3 convolution to 1024 channels with ReLU, global average
pooling and a linear classifier. Choe et al. (CVPR 2020, ``wsolevaluation``) use the same network
(their ``VggCam``); the ADL and attention-based selection papers plug their modules after pool3,
pool4 and conv5_3, which are named positions here.

Stages (forward order) and their outputs at 224 px, full width:

========== ===================================== =========================
stage      layers                                output
========== ===================================== =========================
pool1      conv1_1, conv1_2, pool1               64 x 112 x 112
pool2      conv2_1, conv2_2, pool2               128 x 56 x 56
pool3      conv3_1..conv3_3, pool3               256 x 28 x 28
conv4_3    conv4_1..conv4_3                      512 x 28 x 28
pool4      pool4                                 512 x 14 x 14
conv5_3    conv5_1..conv5_3                      512 x 14 x 14
cam        conv6 (3 x 3, 1024) + ReLU            1024 x 14 x 14
========== ===================================== =========================

The reduced variant for the CPU profile keeps every stage and name at ``width`` times the
channels. With ``small_input=True`` pool4 becomes a 3 x 3 max-pool with stride 1 and padding 1 (the
``M2`` layer of ``wsolevaluation``'s ACoL configuration), so a 64 px input gives an 8 x 8 CAM and a
96 px input a 12 x 12 one, instead of 4 x 4 and 6 x 6.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn
from torchvision.models.vgg import make_layers

from .base import GAPNet, check_width, init_new_layers
from .pretrained import load_torchvision_state_dict

__all__ = ["vgg16_gap"]

# torchvision's VGG16 configuration "D"; the indices below refer to its nn.Sequential.
_CFG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
_STAGES = [
    ("pool1", 0, 5),
    ("pool2", 5, 10),
    ("pool3", 10, 17),
    ("conv4_3", 17, 23),
    ("pool4", 23, 24),
    ("conv5_3", 24, 30),
]  # index 30 is pool5, which CAM removes


def vgg16_gap(
    num_classes: int,
    pretrained: bool | str = False,
    *,
    width: float = 1.0,
    small_input: bool = False,
    pool4_stride: int | None = None,
    head_channels: int | None = None,
    plugins: Mapping[str, nn.Module] | None = None,
    pooling: nn.Module | None = None,
) -> GAPNet:
    """Build VGG16-GAP.

    Args:
        num_classes: number of classes ``C``.
        pretrained: ``True`` or a torchvision weights tag to start from torchvision's ImageNet
            weights (torch hub cache, downloaded once; full width only); ``False`` for He init.
        width: channel multiplier of every convolution (0.25 gives 16/32/64/128/128 channels and a
            256-channel CAM head).
        small_input: for 64-96 px inputs: pool4 with stride 1 (see the module docstring).
        pool4_stride: 1 or 2; overrides the choice made by ``small_input``.
        head_channels: channels of the added conv6; default ``round(1024 * width)``.
        plugins: ``{position: module}``, positions from ``pool1 pool2 pool3 conv4_3 pool4 conv5_3``.
        pooling: replaces global average pooling.

    Returns:
        A :class:`~wsolkit.models.base.GAPNet`; ``features["cam"]`` is conv6's output.
    """
    check_width("vgg16_gap", width, pretrained)
    pool4_stride = pool4_stride if pool4_stride is not None else (1 if small_input else 2)
    if pool4_stride not in (1, 2):
        raise ValueError(f"vgg16_gap: pool4_stride must be 1 or 2, got {pool4_stride!r}.")
    cfg = [v if v == "M" else max(1, round(v * width)) for v in _CFG_D]
    features = make_layers(cfg, batch_norm=False)
    if pretrained:
        state = load_torchvision_state_dict("vgg16", pretrained)
        features.load_state_dict(
            {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        )
    else:
        init_new_layers(features)
    if pool4_stride == 1:
        features[23] = nn.MaxPool2d(kernel_size=3, stride=1, padding=1)
    stages = [(name, nn.Sequential(*features[a:b])) for name, a, b in _STAGES]
    channels = {"pool1": cfg[0], "pool2": cfg[3], "pool3": cfg[6], "conv4_3": cfg[10],
                "pool4": cfg[10], "conv5_3": cfg[14]}
    head_channels = head_channels or max(1, round(1024 * width))
    head = nn.Sequential(nn.Conv2d(cfg[14], head_channels, kernel_size=3, padding=1), nn.ReLU())
    init_new_layers(head)
    return GAPNet(
        "vgg16_gap", stages, head, head_channels, num_classes,
        channels=channels, plugins=plugins, pooling=pooling,
    )


# The plug-in positions, in forward order; they do not depend on width or input-size options.
vgg16_gap.positions = tuple(name for name, _, _ in _STAGES)
