"""Several objects per image: a detection split (COCO) in memory at an inference resolution."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .localization import EvaluationError

__all__ = ["DetectionSet", "load_detection_set"]


@dataclass
class DetectionSet:
    """A detection split (several objects per image) in memory at an inference resolution.

    Attributes:
        images: ``N`` uint8 tensors ``(3, h_i, w_i)``, each image resized so that its longer
            side has the requested length (aspect ratio kept).
        image_ids: ``N`` COCO image ids.
        orig_sizes: ``N`` original ``(H, W)``; detections are scored in these pixels.
        boxes: ``N`` float32 ``(K_i, 4)`` ground-truth boxes in original pixels.
        labels: ``N`` int64 ``(K_i,)`` labels.
        masks: ``N`` uint8 ``(h_i, w_i)`` unions of the instance masks at the input size, or
            ``None``.
        coco: the ``pycocotools`` ground truth the detections are evaluated against.
        category_ids: the COCO category id of every label.
    """

    images: list[torch.Tensor]
    image_ids: list[int]
    orig_sizes: list[tuple[int, int]]
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    masks: list[torch.Tensor] | None
    coco: Any
    category_ids: list[int]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def input_sizes(self) -> list[tuple[int, int]]:
        return [(int(im.shape[1]), int(im.shape[2])) for im in self.images]

    def original_image(self, index: int) -> torch.Tensor:
        """Scene ``index`` resized back to its original size (the pixels its boxes are scored
        in): ``(3, H, W)`` uint8, antialiased bilinear."""
        height, width = self.orig_sizes[index]
        image = self.images[index][None].float()
        resized = torch.nn.functional.interpolate(image, size=(int(height), int(width)),
                                                  mode="bilinear", antialias=True,
                                                  align_corners=False)
        return resized[0].round().clamp(0, 255).to(torch.uint8)

    def with_classes(self, at_least: int = 2) -> list[int]:
        """The indices of the scenes with objects of at least ``at_least`` different classes
        (every index when there is none)."""
        chosen = [i for i, labels in enumerate(self.labels) if len(set(labels.tolist())) >= at_least]
        return chosen or list(range(len(self)))

    def fingerprint(self) -> str:
        """A short hash of the ids and input sizes (what caches are keyed by)."""
        text = "\n".join(f"{i} {h} {w}" for i, (h, w) in zip(self.image_ids, self.input_sizes))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def load_detection_set(dataset, longer_side: int, *, limit: int | None = None,
                       with_masks: bool = False) -> DetectionSet:
    """Reads a ``wsolkit.data.COCODetection`` split (built without a transform) for inference.

    Args:
        dataset: the split; built with ``with_masks=True`` when ``with_masks`` is wanted.
        longer_side: the longer side of every resized image (640 in Barz & Denzler 2022);
            resizing is PIL bilinear, as in :func:`load_localization_set`.
        limit: read only the first ``limit`` images (in ``dataset`` order).
        with_masks: keep the union of the instance masks, resized with nearest neighbours.

    Raises:
        EvaluationError: ``with_masks`` on a dataset without masks.
    """
    if with_masks and not getattr(dataset, "with_masks", False):
        raise EvaluationError(f"{dataset!r} was built without masks; build it with "
                              "with_masks=True or call load_detection_set(with_masks=False).")
    count = len(dataset) if limit is None else min(int(limit), len(dataset))
    images, ids, sizes, boxes, labels, masks = [], [], [], [], [], []
    for index in range(count):
        sample = dataset[index]
        image = sample["image"]
        if not isinstance(image, Image.Image):
            raise EvaluationError(
                f"load_detection_set needs PIL images (a dataset built without a transform); "
                f"got {type(image).__name__}.")
        height, width = sample["orig_size"]
        scale = longer_side / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        resized = image.convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
        images.append(torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1))
        ids.append(int(sample["image_id"]))
        sizes.append((int(height), int(width)))
        boxes.append(np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4))
        labels.append(np.asarray(sample["labels"], dtype=np.int64).reshape(-1))
        if with_masks:
            union = torch.as_tensor(sample["masks"]).amax(dim=0) if len(sample["masks"]) else \
                torch.zeros(height, width, dtype=torch.uint8)
            masks.append(torch.nn.functional.interpolate(
                union[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8))
    return DetectionSet(images=images, image_ids=ids, orig_sizes=sizes, boxes=boxes, labels=labels,
                        masks=masks if with_masks else None, coco=dataset.coco,
                        category_ids=list(dataset.category_ids))
