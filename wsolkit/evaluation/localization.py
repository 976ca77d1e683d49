"""Single-object localization: a split in memory, and every standard metric of a model on it.

Geometry follows the reference protocol of Choe et al. (CVPR 2020): images are resized to
``size x size`` without keeping the aspect ratio, ground-truth boxes are rescaled coordinate by
coordinate with ``int()`` (:func:`wsolkit.boxes.rescale_boxes`) and masks are resized with
nearest-neighbour sampling. Maps come from :func:`wsolkit.evaluation.inference.predict_maps`;
the metrics are :class:`wsolkit.metrics.LocalizationEvaluator`'s.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from wsolkit.boxes import best_iou_per_threshold, rescale_boxes
from wsolkit.cam import normalize_maps, upsample_maps
from wsolkit.metrics import LocalizationEvaluator
from wsolkit.train.data import TensorImages

from .inference import predict_maps

__all__ = ["EvaluationError", "LocalizationSet", "ThresholdFn", "evaluate_image_thresholds",
           "evaluate_localization", "evaluate_maps", "image_threshold_ious", "load_localization_set",
           "oracle_maps", "part_area_share", "part_masks", "score_maps_of"]


class EvaluationError(ValueError):
    """A split or a model cannot be evaluated as asked."""


@dataclass
class LocalizationSet:
    """A localization split held in memory at the evaluation size.

    Attributes:
        images: ``(N, 3, S, S)`` uint8 images.
        labels: ``(N,)`` int64 classes.
        boxes: ``N`` float32 arrays ``(G_i, 4)`` in ``S x S`` pixels (reference rescaling).
        masks: ``(N, S, S)`` uint8 object masks, or ``None``.
        part_boxes: ``N`` arrays ``(P_i, 4)`` of part boxes (embedded benchmark), or ``None``.
        ids: ``N`` image ids.
    """

    images: torch.Tensor
    labels: torch.Tensor
    boxes: list[np.ndarray]
    masks: torch.Tensor | None
    part_boxes: list[np.ndarray] | None
    ids: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    def as_tensor_images(self) -> TensorImages:
        """The images and labels alone, as :func:`wsolkit.train.fit` takes them."""
        return TensorImages(self.images, self.labels, self.ids)

    def subset(self, indices: Sequence[int]) -> LocalizationSet:
        idx = [int(i) for i in indices]
        return LocalizationSet(
            images=self.images[idx], labels=self.labels[idx], boxes=[self.boxes[i] for i in idx],
            masks=None if self.masks is None else self.masks[idx],
            part_boxes=None if self.part_boxes is None else [self.part_boxes[i] for i in idx],
            ids=[self.ids[i] for i in idx])

    def fingerprint(self) -> str:
        """A short hash of the ids, labels and size: what evaluation caches are keyed by."""
        digest = hashlib.sha256(f"{self.size}|".encode())
        digest.update("\n".join(self.ids).encode())
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:12]


def _resize_image(image: Any, size: int) -> torch.Tensor:
    if not isinstance(image, Image.Image):
        raise EvaluationError(
            f"load_localization_set needs samples with PIL images (a dataset built without a "
            f"transform); got {type(image).__name__}.")
    # The same resize as wsolkit.train.preload, so training and evaluation see the same pixels.
    resized = image.convert("RGB").resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)


def _resize_mask(mask: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.as_tensor(mask, dtype=torch.uint8)
    return torch.nn.functional.interpolate(mask[None, None].float(), size=(size, size),
                                           mode="nearest")[0, 0].to(torch.uint8)


def load_localization_set(dataset, size: int) -> LocalizationSet:
    """Reads a whole split of a ``wsolkit.data`` dataset (built without a transform).

    Args:
        dataset: e.g. ``CUBDataset(root, "test")`` or ``ILSVRCDataset(root, "val")``; its samples
            carry a PIL ``"image"``, ``"label"``, ``"boxes"`` in original pixels, ``"orig_size"``
            and optionally ``"mask"`` and ``"part_boxes"``.
        size: the evaluation side ``S`` (224 for the papers, 64 on the embedded benchmark).

    Raises:
        EvaluationError: an image without boxes, or masks on some images only.
    """
    images, labels, boxes, masks, parts, ids = [], [], [], [], [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        height, width = sample["orig_size"]
        image_boxes = np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4)
        if len(image_boxes) == 0:
            raise EvaluationError(
                f"image {sample.get('image_id', index)!r} ({sample.get('path', '')}) has no "
                "ground-truth box; localization splits need at least one per image.")
        images.append(_resize_image(sample["image"], size))
        labels.append(int(sample["label"]))
        boxes.append(rescale_boxes(image_boxes, (height, width), (size, size)).astype(np.float32))
        masks.append(_resize_mask(sample["mask"], size) if "mask" in sample else None)
        if "part_boxes" in sample:
            part = np.asarray(sample["part_boxes"], dtype=np.float32).reshape(-1, 4)
            parts.append(rescale_boxes(part, (height, width), (size, size)).astype(np.float32))
        else:
            parts.append(None)
        ids.append(str(sample.get("image_id", index)))
    if not images:
        raise EvaluationError(f"{dataset!r} is empty.")
    with_masks = sum(m is not None for m in masks)
    if 0 < with_masks < len(masks):
        raise EvaluationError(
            f"{dataset!r}: {len(masks) - with_masks} of {len(masks)} images have no mask; "
            "evaluate masks on a split where every image has one.")
    with_parts = sum(p is not None for p in parts)
    return LocalizationSet(
        images=torch.stack(images), labels=torch.tensor(labels, dtype=torch.long), boxes=boxes,
        masks=torch.stack(masks) if with_masks else None,
        part_boxes=parts if with_parts == len(parts) else None, ids=ids)


def _part_hits(maps: torch.Tensor, part_boxes: Sequence[np.ndarray]) -> np.ndarray:
    """Whether each map's maximum (first in raster order) lies inside one of its part boxes."""
    width = maps.shape[-1]
    flat = maps.reshape(maps.shape[0], -1).argmax(1).numpy()
    ys, xs = flat // width, flat % width
    hits = np.zeros(len(flat), dtype=bool)
    for i, boxes in enumerate(part_boxes):
        b = np.asarray(boxes)
        hits[i] = bool(np.any((b[:, 0] <= xs[i]) & (xs[i] <= b[:, 2]) &
                              (b[:, 1] <= ys[i]) & (ys[i] <= b[:, 3])))
    return hits


def _box_area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)


def part_area_share(data: LocalizationSet) -> float:
    """Mean ratio of the part box area to the object box area (inclusive pixels), in percent:
    the rate at which a map maximum placed uniformly on the object box would hit the part."""
    if data.part_boxes is None:
        raise EvaluationError("this split has no part boxes")
    shares = [_box_area(p[:1]).item() / _box_area(b[:1]).item()
              for p, b in zip(data.part_boxes, data.boxes)]
    return float(np.mean(shares) * 100)


def evaluate_localization(model: torch.nn.Module, data: LocalizationSet, *,
                          mean: Sequence[float], std: Sequence[float],
                          map_name: str = "cam", cam_threshold: float = 0.2,
                          thresholds: np.ndarray | None = None, keep_maps: bool = False,
                          batch_size: int = 256, device=None) -> dict:
    """Every standard metric of ``model`` on ``data`` (the map of the true class per image).

    Returns:
        :meth:`LocalizationEvaluator.compute`'s dict (percentages, ``loc_curve`` over the
        thresholds) with the per-image arrays ``per_image_correct`` ``(N, T)`` bool,
        ``per_image_iou_all`` ``(N, T)`` float32 and ``per_image_top1`` ``(N,)`` bool, plus ``degenerate_maps`` (maps that normalised to zeros),
        with part boxes ``part_hit_rate`` (percent of maps whose maximum falls in the part box)
        and ``per_image_part_hit`` ``(N,)``, and with ``keep_maps`` the score maps ``maps``
        ``(N, S, S)`` float32 (exactly those the metrics were computed from) and ``predictions``.
    """
    evaluator = LocalizationEvaluator(thresholds=thresholds, cam_threshold=cam_threshold,
                                      per_image=True)
    kept, predictions, hits = [], [], []
    degenerate = 0
    for rows, logits, maps in predict_maps(model, data.images, classes=data.labels, mean=mean,
                                           std=std, map_name=map_name, batch_size=batch_size,
                                           device=device):
        degenerate += int((maps.flatten(1).amax(1) == 0).sum())
        evaluator.accumulate(
            maps.numpy(), data.boxes[rows], logits=logits, labels=data.labels[rows],
            masks=None if data.masks is None else data.masks[rows].numpy())
        if data.part_boxes is not None:
            hits.append(_part_hits(maps, data.part_boxes[rows]))
        if keep_maps:
            kept.append(maps)
            predictions.append(logits.argmax(1))
    results = evaluator.compute()
    results["degenerate_maps"] = degenerate
    if degenerate:
        warnings.warn(f"{degenerate} of {len(data)} score maps were constant or non-finite and "
                      "were scored as all-zero maps.", stacklevel=2)
    if hits:
        results["per_image_part_hit"] = np.concatenate(hits)
        results["part_hit_rate"] = float(results["per_image_part_hit"].mean() * 100)
    if keep_maps:
        results["maps"] = torch.cat(kept)
        results["predictions"] = torch.cat(predictions)
    return results


def oracle_maps(masks: torch.Tensor, grid: int) -> torch.Tensor:
    """Score maps made from masks: each mask averaged onto a ``grid x grid`` feature grid, then
    upsampled and normalised exactly like a CAM. The best any CAM of that resolution can do.

    Args:
        masks: ``(N, S, S)`` uint8 masks.
        grid: the feature-map side (8 for the benchmark's networks at 64 px).
    """
    pooled = torch.nn.functional.adaptive_avg_pool2d(masks[:, None].float(), grid)[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return normalize_maps(upsample_maps(pooled, tuple(masks.shape[-2:])), mode="minmax")


def evaluate_maps(maps: torch.Tensor, data: LocalizationSet, cam_threshold: float = 0.2) -> dict:
    """Metrics of given score maps ``(N, S, S)`` against the split's boxes (and masks), with the
    per-image ``per_image_correct`` ``(N, T)``."""
    evaluator = LocalizationEvaluator(cam_threshold=cam_threshold, per_image=True)
    evaluator.accumulate(maps.numpy(), data.boxes,
                         masks=None if data.masks is None else data.masks.numpy())
    return evaluator.compute()


def part_masks(data: LocalizationSet) -> torch.Tensor:
    """``(N, S, S)`` uint8 masks filling each image's part boxes (embedded benchmark)."""
    if data.part_boxes is None:
        raise EvaluationError("this split has no part boxes")
    out = torch.zeros(len(data), data.size, data.size, dtype=torch.uint8)
    for i, boxes in enumerate(data.part_boxes):
        for x1, y1, x2, y2 in np.asarray(boxes, dtype=int):
            out[i, y1:y2 + 1, x1:x2 + 1] = 1
    return out


#: ``choose(maps) -> thresholds``: one threshold per score map of a batch (``(B, S, S)`` float
#: in ``[0, 1]`` -> ``(B,)``), NaN where it has no answer.
ThresholdFn = Callable[[torch.Tensor], np.ndarray]


def image_threshold_ious(maps, boxes: Sequence[np.ndarray], thresholds) -> np.ndarray:
    """IoU of each map's largest-component box at that map's own threshold.

    Boxes follow the reference protocol of :func:`wsolkit.boxes.best_iou_per_threshold` on
    float64 maps, exactly as :class:`wsolkit.metrics.LocalizationEvaluator` draws them, so an
    image whose threshold is 0.2 scores as it does in GT-known loc at 0.2.

    Args:
        maps: ``(N, S, S)`` float score maps in ``[0, 1]``.
        boxes: ``N`` arrays ``(G_i, 4)``, ground truth in map pixels.
        thresholds: ``(N,)`` finite thresholds, one per map.

    Returns:
        ``(N,)`` float64: the best IoU over each image's ground-truth boxes.
    """
    values = np.asarray(maps, dtype=np.float64)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if values.ndim != 3 or t.shape[0] != values.shape[0] or not np.isfinite(t).all():
        raise EvaluationError(
            f"image_threshold_ious: {t.shape[0]} thresholds (finite: {bool(np.isfinite(t).all())}) "
            f"for maps of shape {values.shape}; expected (N, S, S) maps and N finite thresholds.")
    levels, inverse = np.unique(t, return_inverse=True)
    ious = best_iou_per_threshold(values, list(boxes), levels, mode="largest")
    return ious[np.arange(t.size), inverse.reshape(-1)]


def evaluate_image_thresholds(model: torch.nn.Module, data: LocalizationSet,
                              choosers: Mapping[str, ThresholdFn], *, mean: Sequence[float],
                              std: Sequence[float], map_name: str = "cam",
                              fallback: float = 0.2, batch_size: int = 256, device=None) -> dict:
    """GT-known and top-1 localization when every image gets its own threshold.

    Each chooser sees the score maps of the true class, computed as :func:`predict_maps` does
    for :func:`evaluate_localization`, and returns one threshold per image; an image it leaves
    undecided (NaN) is scored at ``fallback`` and counted. A chooser whose attribute
    ``needs_features`` is true is called as ``choose(maps, features=...)`` with the batch's
    last feature maps ``(B, K, h, w)`` (the two-stage search of :mod:`wsolkit.methods.rcam`).

    Returns:
        ``{"num_images", "top1_cls", "per_image_top1", "degenerate_maps", "choosers": {name:
        {"gt_known_loc", "top1_loc", "undecided", "thresholds", "ious", "per_image_correct"}}}``:
        accuracies in percent; the thresholds used and the IoUs as ``(N,)`` float64 arrays;
        ``per_image_top1`` and each chooser's ``per_image_correct`` (IoU >= 0.5) as ``(N,)``
        bool arrays, whose means are ``top1_cls`` and ``gt_known_loc``.
    """
    thresholds = {name: [] for name in choosers}
    ious = {name: [] for name in choosers}
    undecided = dict.fromkeys(choosers, 0)
    correct_cls = []
    degenerate = 0
    for rows, logits, maps, features in predict_maps(
            model, data.images, classes=data.labels, mean=mean, std=std, map_name=map_name,
            batch_size=batch_size, device=device, with_features=True):
        degenerate += int((maps.flatten(1).amax(1) == 0).sum())
        correct_cls.append((logits.argmax(1) == data.labels[rows]).numpy())
        for name, choose in choosers.items():
            if getattr(choose, "needs_features", False):
                chosen = choose(maps, features=features)
            else:
                chosen = choose(maps)
            chosen = np.asarray(chosen, dtype=np.float64).reshape(-1)
            if chosen.shape[0] != maps.shape[0]:
                raise EvaluationError(
                    f"threshold chooser {name!r} returned {chosen.shape[0]} thresholds for "
                    f"{maps.shape[0]} maps; it must return one per map (NaN for none).")
            missing = np.isnan(chosen)
            undecided[name] += int(missing.sum())
            chosen = np.where(missing, fallback, chosen)
            thresholds[name].append(chosen)
            ious[name].append(image_threshold_ious(maps.numpy(), data.boxes[rows], chosen))
    if degenerate:
        warnings.warn(f"{degenerate} of {len(data)} score maps were constant or non-finite and "
                      "were scored as all-zero maps.", stacklevel=2)
    top1 = np.concatenate(correct_cls)
    results = {"num_images": len(data), "top1_cls": float(top1.mean() * 100),
               "per_image_top1": top1, "degenerate_maps": degenerate, "choosers": {}}
    for name in choosers:
        iou = np.concatenate(ious[name])
        correct = iou >= 0.5
        results["choosers"][name] = {
            "gt_known_loc": float(correct.mean() * 100),
            "top1_loc": float((correct & top1).mean() * 100),
            "undecided": undecided[name], "thresholds": np.concatenate(thresholds[name]),
            "ious": iou, "per_image_correct": correct}
    return results


def score_maps_of(model: torch.nn.Module, data: LocalizationSet, indices: Sequence[int], *,
                  mean: Sequence[float], std: Sequence[float], map_name: str = "cam",
                  device=None) -> torch.Tensor:
    """The score maps of the true class for some images of a split, exactly as
    :func:`evaluate_localization` scores them (for figures).

    Args:
        model: the trained network.
        data: the split.
        indices: positions of the images in ``data``.
        mean, std: the normalisation of the run's configuration.
        map_name: a registered score map.

    Returns:
        ``(len(indices), S, S)`` float32 maps in ``[0, 1]``.
    """
    part = data.subset(list(indices))
    return torch.cat([maps for _, _, maps in predict_maps(
        model, part.images, classes=part.labels, mean=mean, std=std, map_name=map_name,
        device=device)])
