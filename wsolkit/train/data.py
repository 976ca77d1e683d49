"""Training data held in memory: :class:`TensorImages`, :func:`preload` and the toy sets.

On small data the per-epoch decoding of image files costs more than the model on two CPU cores;
:func:`preload` decodes a dataset once into a :class:`TensorImages` (uint8 images and labels, and
the per-image targets its methods need), which :func:`wsolkit.train.fit` batches, flips and crops
on the device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .config import ConfigError, TrainConfig
from .targets import target_map

__all__ = ["TensorImages", "preload", "toy_data", "toy_images"]



class TensorImages:
    """A small image classification set held as tensors.

    Args:
        images: ``(N, 3, H, W)`` ``uint8`` tensor.
        labels: ``(N,)`` integer tensor (stored as ``int64``).
        ids: optional ``N`` image identifiers, kept for traceability.
        targets: optional ``{name: (N, 1, H, W) float tensor}`` per-image target maps in
            ``[0, 1]`` (float16 storage), flipped and cropped with the images by ``fit``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str] | None = None,
                 targets: Mapping[str, torch.Tensor] | None = None) -> None:
        if (not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4
                or images.shape[1] != 3):
            raise TypeError(
                "TensorImages: images must be a (N, 3, H, W) uint8 tensor, got "
                f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}."
            )
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise TypeError(
                f"TensorImages: labels must be ({images.shape[0]},) integers, got {labels.dtype} {tuple(labels.shape)}."
            )
        if ids is not None and len(ids) != images.shape[0]:
            raise ValueError(f"TensorImages: {len(ids)} ids for {images.shape[0]} images.")
        self.images = images
        self.labels = labels.long()
        self.ids = list(ids) if ids is not None else None
        self.targets: dict[str, torch.Tensor] = {}
        for name, value in (targets or {}).items():
            value = torch.as_tensor(value)
            if value.shape != (images.shape[0], 1, *images.shape[2:]) or not value.is_floating_point():
                raise TypeError(
                    f"TensorImages: target {name!r} must be a ({images.shape[0]}, 1, "
                    f"{images.shape[2]}, {images.shape[3]}) float tensor, got {value.dtype} "
                    f"{tuple(value.shape)}.")
            self.targets[name] = value.to(torch.float16)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return tuple(self.images.shape[2:])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> TensorImages:
        """The images at ``indices`` (a new object sharing no storage)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        ids = [self.ids[i] for i in idx.tolist()] if self.ids is not None else None
        return TensorImages(self.images[idx].clone(), self.labels[idx].clone(), ids,
                            {name: t[idx].clone() for name, t in self.targets.items()})

    def with_targets(self, specs: Mapping[str, object], *, cache=None) -> TensorImages:
        """The same images with the targets ``specs`` (``{name: TargetSpec}``) computed from the
        stored pixels (keyed by them in the cache); for data that has no files behind it."""
        targets = {name: torch.from_numpy(np.stack([
            target_map(spec, self.images[i].permute(1, 2, 0).numpy(), cache=cache,
                       where=self.ids[i] if self.ids else str(i))
            for i in range(len(self))]))[:, None] for name, spec in specs.items()}
        return TensorImages(self.images, self.labels, self.ids, {**self.targets, **targets})

    def __repr__(self) -> str:
        classes = int(self.labels.max()) + 1 if len(self) else 0
        extra = f", targets={sorted(self.targets)}" if self.targets else ""
        return f"TensorImages(n={len(self)}, size={self.image_size}, classes={classes}{extra})"


class _PreloadCollate:
    """Collate for :func:`preload`: every sample to a ``(3, size, size)`` uint8 tensor."""

    def __init__(self, size: int, targets: Mapping[str, object], cache) -> None:
        self.size, self.targets, self.cache = size, dict(targets), cache

    def _target(self, spec, image, sample, image_id) -> torch.Tensor:
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise TypeError(f"preload: targets are computed from the original PIL image; sample "
                            f"{image_id or ''} has a {type(image).__name__} (drop the dataset's transform).")
        value = target_map(spec, image, path=sample.get("path"), cache=self.cache,
                           where=str(sample.get("path", image_id)))
        # Resized exactly as the image is (PIL bilinear with its antialiasing), in float.
        resized = Image.fromarray(value, mode="F").resize((self.size, self.size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(resized).copy())[None]

    def __call__(self, samples):
        from PIL import Image

        images, labels, ids = [], [], []
        targets: dict[str, list] = {name: [] for name in self.targets}
        for sample in samples:
            if isinstance(sample, Mapping):
                image, label, image_id = sample["image"], sample["label"], sample.get("image_id")
            else:
                image, label = sample[0], sample[1]
                image_id = None
            for name, spec in self.targets.items():
                if not isinstance(sample, Mapping):
                    raise TypeError("preload: targets need sample dicts (with the image's 'path').")
                targets[name].append(self._target(spec, image, sample, image_id))
            if isinstance(image, Image.Image):
                image = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
                t = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
            elif isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3:
                if image.dtype == torch.uint8:
                    image = image.float() / 255
                if image.min() < 0 or image.max() > 1:
                    raise ConfigError(
                        f"preload: sample {image_id or ''} has values in [{float(image.min()):.3f}, "
                        f"{float(image.max()):.3f}]; expected [0, 1] images (no normalisation in the "
                        "dataset's transform: fit normalises)."
                    )
                if tuple(image.shape[1:]) != (self.size, self.size):
                    image = F.interpolate(image[None].float(), size=(self.size, self.size),
                                          mode="bilinear", antialias=True, align_corners=False)[0]
                t = (image * 255).round().clamp(0, 255).to(torch.uint8)
            else:
                raise TypeError(
                    f"preload: a sample's image must be a PIL image or a (3, H, W) tensor, got "
                    f"{type(image).__name__} {tuple(getattr(image, 'shape', ()))}."
                )
            images.append(t)
            labels.append(int(label))
            ids.append(image_id)
        return (torch.stack(images), torch.tensor(labels), ids,
                {name: torch.stack(values) for name, values in targets.items()})


def preload(dataset, size: int, *, batch_size: int = 64, num_workers: int = 0,
            targets: Mapping[str, object] | None = None, target_cache=None) -> TensorImages:
    """Decode a dataset once into a :class:`TensorImages` of ``size x size`` images.

    Args:
        dataset: a map-style dataset of sample dicts (``"image"`` a PIL image or a ``(3, H, W)``
            tensor in ``[0, 1]``, ``"label"``, optional ``"image_id"``) or ``(image, label)`` pairs.
            Give it no random transform: what is decoded here is what every epoch sees (before
            :func:`fit`'s on-device flips and crops).
        size: output side; images are resized (aspect ratio not kept, as in the evaluation
            transform of ``wsolevaluation``) with antialiasing.
        batch_size: samples per decoding batch.
        num_workers: decoding worker processes.
        targets: ``{name: TargetSpec}`` per-image targets to compute from each original image
            (cached in ``target_cache``, :mod:`wsolkit.train.targets`) and resize as the image;
            :func:`wsolkit.train.method_targets` gives those a configuration's methods need.
        target_cache: the target cache folder; default ``<runs folder>/targets``.

    Returns:
        ``TensorImages`` with ``uint8`` images ``(N, 3, size, size)``, labels, ids and targets.
    """
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=_PreloadCollate(size, targets or {}, target_cache),
    )
    images, labels, ids = [], [], []
    maps: dict[str, list] = {name: [] for name in (targets or {})}
    for im, lb, idb, tb in loader:
        images.append(im)
        labels.append(lb)
        ids.extend(idb)
        for name, values in tb.items():
            maps[name].append(values)
    if not images:
        raise ValueError("preload: the dataset is empty.")
    return TensorImages(torch.cat(images), torch.cat(labels), ids if all(i is not None for i in ids) else None,
                        {name: torch.cat(values) for name, values in maps.items()})


def toy_images(num_samples: int, image_size: int = 32, num_classes: int = 4, seed: int = 0) -> TensorImages:
    """A tiny learnable set for tests and smoke runs.

    Class ``c`` has a bright horizontal band (a quarter of the image high, full width, so that
    horizontal flips keep the class) in band ``c % 4`` of colour channel ``(c // 4) % 3``, on
    uniform noise; classes are distinct for ``num_classes <= 12``.

    Args:
        num_samples: ``N``.
        image_size: side ``S`` (>= 4).
        num_classes: classes (labels ``i % num_classes``).
        seed: the noise depends on it only.

    Returns:
        ``TensorImages`` with ``(N, 3, S, S)`` uint8 images.
    """
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(num_samples, 3, image_size, image_size, generator=g) * 160).to(torch.uint8)
    labels = torch.arange(num_samples) % num_classes
    band = image_size // 4
    for i, c in enumerate(labels.tolist()):
        images[i, (c // 4) % 3, (c % 4) * band:(c % 4 + 1) * band, :] = 255
    return TensorImages(images, labels)


def toy_data(config: TrainConfig) -> tuple[TensorImages, TensorImages]:
    """Data factory for the command line (``--data wsolkit.train:toy_data``).

    Reads ``config.extra["toy_data"]`` (``num_samples``, default 64; ``seed``, default 0;
    ``target_cache``, where the targets of the configuration's methods go) and returns
    ``(train, val)`` :func:`toy_images` sets (val: a quarter as many, other seed).
    """
    from .model import method_targets

    opts = dict(config.extra.get("toy_data", {}))
    n, seed = int(opts.get("num_samples", 64)), int(opts.get("seed", 0))
    train = toy_images(n, config.image_size, config.num_classes, seed)
    specs = method_targets(config)
    if specs:
        train = train.with_targets(specs, cache=opts.get("target_cache"))
    val = toy_images(max(1, n // 4), config.image_size, config.num_classes, seed + 1)
    return train, val
