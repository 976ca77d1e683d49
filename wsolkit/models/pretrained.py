"""ImageNet weights from torchvision, read from the local torch hub cache only (never downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision.models as tvm

__all__ = ["PretrainedWeightsNotFound", "load_torchvision_state_dict", "weights_path"]

# The original weights for every architecture (IMAGENET1K_V1): the papers reproduced here
# fine-tune from these. For ResNet-50, torchvision's newer V2 recipe can be asked for by name.
_WEIGHTS = {
    "vgg16": tvm.VGG16_Weights,
    "resnet50": tvm.ResNet50_Weights,
    "alexnet": tvm.AlexNet_Weights,
    "googlenet": tvm.GoogLeNet_Weights,
    "inception_v3": tvm.Inception_V3_Weights,
}


class PretrainedWeightsNotFound(FileNotFoundError):
    """Raised when the torchvision weight file is not in the local torch hub cache."""


def _weights_enum(arch: str, pretrained: bool | str):
    enum = _WEIGHTS[arch]
    tag = "IMAGENET1K_V1" if pretrained is True else pretrained
    try:
        return enum[tag]
    except KeyError:
        raise ValueError(
            f"pretrained={pretrained!r} for {arch}: expected True or one of {[w.name for w in enum]}."
        ) from None


def weights_path(arch: str, pretrained: bool | str = True) -> Path:
    """Where the torchvision weight file of ``arch`` is expected.

    Args:
        arch: torchvision architecture name (``"vgg16"``, ``"resnet50"``, ``"alexnet"``,
            ``"googlenet"``, ``"inception_v3"``).
        pretrained: ``True`` (the IMAGENET1K_V1 weights) or a torchvision weights tag.

    Returns:
        ``torch.hub.get_dir()/checkpoints/<file name of the torchvision URL>``.
    """
    url = _weights_enum(arch, pretrained).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_torchvision_state_dict(arch: str, pretrained: bool | str = True) -> dict[str, torch.Tensor]:
    """Load torchvision's ImageNet state dict for ``arch`` from the local cache.

    Args:
        arch: see :func:`weights_path`.
        pretrained: see :func:`weights_path`.

    Returns:
        The state dict (CPU tensors), loaded with ``weights_only=True``.

    Raises:
        PretrainedWeightsNotFound: the file is absent; the message names the exact path and the
            URL to fetch it from on a machine with network access.
    """
    weights = _weights_enum(arch, pretrained)
    path = weights_path(arch, pretrained)
    if not path.is_file():
        raise PretrainedWeightsNotFound(
            f"ImageNet weights for {arch} not found at {path}. This project never downloads: "
            f"copy the file {path.name} (from {weights.url}) into {path.parent}/ "
            f"(or set TORCH_HOME so that torch.hub.get_dir() points at a cache holding it), "
            f"or build the model with pretrained=False."
        )
    return torch.load(path, map_location="cpu", weights_only=True)
