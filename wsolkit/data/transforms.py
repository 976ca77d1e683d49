"""Whole-sample transforms that move boxes and masks with the image, and a batch collate.

The builders return ``torchvision.transforms.v2`` pipelines. The loaders of
:mod:`wsolkit.data` call them on the whole sample dict with the boxes wrapped as
``tv_tensors.BoundingBoxes`` and the masks as ``tv_tensors.Mask`` (see
:func:`wsolkit.data.common.apply_transform`), so a resize scales the boxes, a flip mirrors
them (``x1' = W - x2``), and crops shift and clamp them to the crop; masks are resized with
nearest-neighbour interpolation and stay ``uint8``. A box that a random crop leaves entirely
outside keeps its place in the list with zero area, so box ``k`` is always ground-truth box ``k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms import v2

#: Channel mean and standard deviation of ImageNet, used by torchvision's pretrained weights.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _finish(normalize: bool, mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    steps: list[v2.Transform] = [v2.ToDtype(torch.float32, scale=True)]
    if normalize:
        steps.append(v2.Normalize(mean=list(mean), std=list(std)))
    return steps


def _default_resize(size: int) -> int:
    # 256 for 224: the resize-then-crop ratio of the ImageNet and wsolevaluation recipes.
    return round(size * 256 / 224)


def train_transform(
    size: int = 224,
    *,
    resize: int | None = None,
    scale: tuple[float, float] | None = None,
    hflip: float = 0.5,
    normalize: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Training augmentation for a whole sample.

    Two recipes:

    * ``scale=None`` (default), the wsolevaluation recipe (Choe et al., CVPR 2020): resize to
      ``resize x resize`` (default ``round(size * 256 / 224)``), take a random ``size x size``
      crop, flip horizontally with probability ``hflip``.
    * ``scale=(low, high)``: ``RandomResizedCrop(size, scale)`` then the flip (the usual
      ImageNet classification recipe).

    Args:
        size: side of the square output.
        resize: side of the square resize before the random crop (first recipe only).
        scale: area range of ``RandomResizedCrop``; selects the second recipe.
        hflip: probability of a horizontal flip.
        normalize: subtract ``mean`` and divide by ``std`` (ImageNet statistics by default);
            ``False`` leaves the image in ``[0, 1]``.
        mean, std: per-channel statistics for ``normalize``.

    Returns:
        A transform mapping a sample with a PIL ``"image"`` to one with a ``(3, size, size)``
        float32 image tensor.
    """
    if scale is None:
        side = resize or _default_resize(size)
        if side < size:
            raise ValueError(f"resize={side} is smaller than the crop size={size}")
        geometry: list[v2.Transform] = [v2.Resize((side, side)), v2.RandomCrop(size)]
    else:
        if resize is not None:
            raise ValueError("resize applies to the resize-then-crop recipe; drop it or scale")
        geometry = [v2.RandomResizedCrop(size, scale=scale)]
    return v2.Compose(
        [v2.ToImage(), *geometry, v2.RandomHorizontalFlip(hflip), *_finish(normalize, mean, std)]
    )


def eval_transform(
    size: int = 224,
    *,
    resize: int | None = None,
    normalize: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Deterministic evaluation transform for a whole sample.

    ``resize=None`` (default) resizes the whole image to ``size x size``, as the wsolevaluation
    protocol does, so no ground truth is cut off. With ``resize`` given, the shorter side is
    resized to ``resize`` and the centre ``size x size`` is cropped (the ImageNet classification
    recipe; boxes are clamped to the crop).

    Args:
        size: side of the square output.
        resize: shorter-side length before a centre crop, or ``None``.
        normalize: subtract ``mean`` and divide by ``std``; ``False`` keeps ``[0, 1]``.
        mean, std: per-channel statistics for ``normalize``.

    Returns:
        A transform mapping a sample with a PIL ``"image"`` to one with a ``(3, size, size)``
        float32 image tensor.
    """
    if resize is None:
        geometry: list[v2.Transform] = [v2.Resize((size, size))]
    else:
        if resize < size:
            raise ValueError(f"resize={resize} is smaller than the crop size={size}")
        geometry = [v2.Resize(resize), v2.CenterCrop(size)]
    return v2.Compose([v2.ToImage(), *geometry, *_finish(normalize, mean, std)])


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples: images and labels stacked, everything else (boxes, masks, ids) as lists.

    Args:
        batch: samples with a ``(3, H, W)`` float tensor ``"image"`` of one common size (after
            a transform) and, optionally, an int ``"label"``.

    Returns:
        ``{"image": (N, 3, H, W) float32, "label": (N,) int64, other key: list of N values}``.

    Raises:
        TypeError: an image is not a tensor (no transform was given to the dataset).
        ValueError: an empty batch, samples with different keys or images of different sizes.
    """
    if not batch:
        raise ValueError("collate: empty batch")
    keys = list(batch[0])
    for i, sample in enumerate(batch):
        if list(sample) != keys:
            raise ValueError(
                f"collate: sample {i} has keys {sorted(sample)} but sample 0 has {sorted(keys)}; "
                "expected samples of one dataset"
            )
        image = sample.get("image")
        if image is not None and not isinstance(image, torch.Tensor):
            raise TypeError(
                f"collate: sample {i} ({sample.get('path')}) has a {type(image).__name__} image; "
                "expected a tensor: give the dataset a transform such as eval_transform(224)"
            )
    out: dict[str, Any] = {}
    for key in keys:
        values = [sample[key] for sample in batch]
        if key == "image":
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(
                    f"collate: images of different shapes {sorted(shapes)}; expected one size, "
                    "e.g. from eval_transform(size) or train_transform(size)"
                )
            out[key] = torch.stack(values)
        elif key == "label":
            out[key] = torch.tensor(values, dtype=torch.int64)
        else:
            out[key] = values
    return out
