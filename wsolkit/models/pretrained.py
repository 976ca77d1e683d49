"""ImageNet weights from torchvision, through torchvision's own weights mechanism.

``load_torchvision_state_dict("vgg16")`` does what ``torchvision.models.VGG16_Weights.
IMAGENET1K_V1.get_state_dict()`` does: it reads ``torch.hub.get_dir()/checkpoints/<file>`` when
the file is there and otherwise downloads it into that folder, checking the hash prefix in the
file name (``vgg16-397923af.pth``). Where the download fails (no network), the error names the
file, the URL and the folder to copy it into.
"""

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
    """The torchvision weight file is not in the torch hub cache and could not be downloaded."""


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
    """Where the torchvision weight file of ``arch`` is cached.

    Args:
        arch: torchvision architecture name (``"vgg16"``, ``"resnet50"``, ``"alexnet"``,
            ``"googlenet"``, ``"inception_v3"``).
        pretrained: ``True`` (the IMAGENET1K_V1 weights) or a torchvision weights tag.

    Returns:
        ``torch.hub.get_dir()/checkpoints/<file name of the torchvision URL>``, the file
        torchvision's ``get_state_dict`` reads or downloads.
    """
    url = _weights_enum(arch, pretrained).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def load_torchvision_state_dict(arch: str, pretrained: bool | str = True) -> dict[str, torch.Tensor]:
    """Load torchvision's ImageNet state dict for ``arch``, downloading it once if needed.

    Args:
        arch: see :func:`weights_path`.
        pretrained: see :func:`weights_path`.

    Returns:
        The state dict (CPU tensors), loaded with ``weights_only=True``.

    Raises:
        PretrainedWeightsNotFound: the file is not cached and the download failed (no network,
            a proxy, a corrupt transfer caught by the hash check: ``URLError`` and the other
            ``OSError``, ``RuntimeError``); the message names the file, the URL and the folder
            to copy it into by hand.
        RuntimeError: the cached file is not a readable state dict (a truncated copy, say);
            the message names it.
    """
    weights = _weights_enum(arch, pretrained)
    path = weights_path(arch, pretrained)
    cached = path.is_file()
    try:
        return weights.get_state_dict(
            progress=True, check_hash=True, map_location="cpu", weights_only=True
        )
    except Exception as error:
        if cached:
            # A truncated or foreign file fails inside the unpickler with any kind of error.
            raise RuntimeError(
                f"ImageNet weights for {arch} at {path} cannot be read ({type(error).__name__}: "
                f"{error}); delete the file so that it is downloaded again, or copy it anew from "
                f"{weights.url}."
            ) from error
        if not isinstance(error, (OSError, RuntimeError)):
            raise
        raise PretrainedWeightsNotFound(
            f"ImageNet weights for {arch} are not at {path} and could not be downloaded from "
            f"{weights.url} ({type(error).__name__}: {error}). On a machine without network, "
            f"copy the file {path.name} (from {weights.url}) into {path.parent}/ (or set "
            "TORCH_HOME so that torch.hub.get_dir() points at a cache holding it), or build the "
            "model with pretrained=False."
        ) from error
