"""Per-image training targets: computed once per source image, cached on disk, moved with it.

A method that trains against a map per image (a pseudo saliency map, say) declares a
:class:`wsolkit.methods.TargetSpec`. The map is computed from the image at its original size and
stored as ``<cache>/<spec key>/<hash of the image file's bytes>.npy`` (float32), so it is computed
once per image whatever the run, and recomputed when the image or the computation (its key)
changes. Each training path then moves it with the image:

* in memory (:func:`wsolkit.train.preload`): resized exactly as the image (PIL bilinear) and flipped
  and cropped on the device by the same draws as the image (``TensorImages.targets``);
* streamed (:class:`WithTargets`): wrapped as a ``tv_tensors.Mask`` so that every
  ``torchvision.transforms.v2`` resize, crop and flip moves it with the image (nearest-neighbour
  resampling, as for masks).

The loss finds the batch's maps in ``ctx.targets[name]``, ``(N, 1, H, W)`` float.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsolkit.io import atomic_save_array

__all__ = ["TARGET_KEY_PREFIX", "TargetError", "WithTargets", "default_target_cache", "target_map"]

#: Samples of :class:`WithTargets` hold target ``name`` under ``"target:" + name``.
TARGET_KEY_PREFIX = "target:"


class TargetError(ValueError):
    """A per-image target could not be computed, or has the wrong form."""


def default_target_cache() -> Path:
    """``<runs folder>/targets`` (:func:`wsolkit.profiles.runs_dir`)."""
    from wsolkit.profiles import runs_dir

    return runs_dir() / "targets"


def _source_digest(image, path: str | os.PathLike | None) -> str:
    digest = hashlib.sha256()
    if path is not None and os.path.isfile(path):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    else:  # no file behind the sample: its decoded pixels are the source
        array = np.asarray(image)
        digest.update(repr(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:20]


def _folder_name(key: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9_.=-]+", "_", key)[:60]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def target_map(spec, image, *, path: str | os.PathLike | None = None,
               cache: str | os.PathLike | None = None, where: str = "") -> np.ndarray:
    """The target ``spec`` of one image, from the cache or computed (and cached).

    Args:
        spec: a :class:`wsolkit.methods.TargetSpec`.
        image: the image at its original size (PIL image or ``(H, W, 3)`` uint8 array).
        path: its file, whose bytes key the cache (else its pixels do).
        cache: the cache folder; default :func:`default_target_cache`.
        where: the image's name for error messages.

    Returns:
        ``(H, W)`` float32 in ``[0, 1]``, the image's size.

    Raises:
        TargetError: the computation returned something else (the message names the image).
    """
    rgb = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    height, width = rgb.shape[:2]
    folder = Path(cache) if cache is not None else default_target_cache()
    file = folder / _folder_name(spec.key) / f"{_source_digest(rgb, path)}.npy"
    if file.exists():
        try:
            cached = np.load(file, allow_pickle=False)
        except (OSError, ValueError):
            cached = None  # a damaged cache entry is recomputed
        if cached is not None and cached.shape == (height, width):
            return cached
    value = np.asarray(spec.compute(rgb), dtype=np.float32)
    if value.shape != (height, width) or not np.isfinite(value).all() \
            or value.min() < 0 or value.max() > 1:
        raise TargetError(
            f"target {spec.key!r} of image {where or path or '?'}: got an array of shape "
            f"{value.shape} with values in [{np.nanmin(value) if value.size else 'empty'}, "
            f"{np.nanmax(value) if value.size else 'empty'}]; expected ({height}, {width}) finite "
            "values in [0, 1].")

    atomic_save_array(value, file)
    return value


class WithTargets(torch.utils.data.Dataset):
    """A ``wsolkit.data`` dataset whose samples carry per-image targets through a transform.

    Args:
        dataset: built *without* a transform (samples with a PIL ``"image"`` and ``"path"``).
        targets: ``{name: TargetSpec}``.
        transform: the whole-sample transform (e.g. :func:`wsolkit.data.train_transform`); boxes,
            masks and targets move with the image.
        cache: the target cache folder (default :func:`default_target_cache`).
    """

    def __init__(self, dataset, targets: Mapping[str, Any], transform=None, *, cache=None) -> None:
        if getattr(dataset, "transform", None) is not None:
            raise TargetError(f"WithTargets: {dataset!r} has a transform of its own; build it "
                              "without one and give the transform here, so the targets move too.")
        self.dataset, self.targets, self.transform, self.cache = dataset, dict(targets), transform, cache

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def labels(self):
        return self.dataset.labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        from wsolkit.data.common import apply_transform

        sample = dict(self.dataset[index])
        where = str(sample.get("path", sample.get("image_id", index)))
        keys = []
        for name, spec in self.targets.items():
            value = target_map(spec, sample["image"], path=sample.get("path"), cache=self.cache,
                               where=where)
            sample[TARGET_KEY_PREFIX + name] = torch.from_numpy(value)[None]
            keys.append(TARGET_KEY_PREFIX + name)
        return apply_transform(sample, self.transform, box_keys=("boxes", "part_boxes"),
                               mask_keys=("mask", *keys))
