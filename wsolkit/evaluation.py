"""From a trained model and a localization split to score maps and metrics, cached on disk.

Evaluation is kept apart from training: a run directory (:mod:`wsolkit.runs`) holds the
checkpoint, and this module reads it back, computes the score maps of a split and feeds them to
:class:`wsolkit.metrics.LocalizationEvaluator`. Results (and, on request, the score maps) are
cached in the run directory, keyed by the split and the evaluation settings, so rebuilding the
book or moving a threshold slider recomputes nothing.

Geometry follows the reference protocol of Choe et al. (CVPR 2020): images are resized to
``size x size`` without keeping the aspect ratio, ground-truth boxes are rescaled coordinate by
coordinate with ``int()`` (:func:`wsolkit.boxes.rescale_boxes`) and masks are resized with
nearest-neighbour sampling.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from wsolkit.boxes import best_iou_per_threshold, rescale_boxes
from wsolkit.cam import class_activation_maps, normalize_maps, upsample_maps
from wsolkit.metrics import LocalizationEvaluator
from wsolkit.train import TensorImages, TrainConfig, atomic_write_text

#: ``map_fn(model, features, classes) -> (N, h, w)`` raw (unnormalised) maps of ``classes``.
MapFn = Callable[[torch.nn.Module, Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


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


def cam_map_fn(model: torch.nn.Module, features: Mapping[str, torch.Tensor],
               classes: torch.Tensor) -> torch.Tensor:
    """The plain CAM of ``classes`` (Zhou et al. 2016), without bias, from ``features["cam"]``."""
    return class_activation_maps(features["cam"], model.classifier.weight, classes=classes)


def _normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean_t) / std_t


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_maps(model: torch.nn.Module, images: torch.Tensor, *, classes: torch.Tensor | None = None,
                 mean: Sequence[float], std: Sequence[float], map_fn: MapFn = cam_map_fn,
                 batch_size: int = 256, device: torch.device | str | None = None,
                 ) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Yields ``(rows, logits, score_maps)`` batch by batch.

    Args:
        model: a ``wsolkit.models`` network (returns ``(logits, features)``).
        images: ``(N, 3, S, S)`` uint8.
        classes: ``(N,)`` the class whose map to take per image; ``None``: the top-1 prediction.
        mean, std: the normalisation the model was trained with.
        map_fn: which map (default the CAM); see :data:`MapFn`.
        batch_size: images per forward pass.
        device: default CUDA when available.

    Yields:
        the slice of rows, ``(B, C)`` float32 logits on the CPU and ``(B, S, S)`` float32 score
        maps in ``[0, 1]`` on the CPU (bicubic upsampling, then min-max normalisation).
    """
    device = torch.device(device) if device is not None else _default_device()
    model = model.to(device).eval()
    size = tuple(images.shape[-2:])
    for start in range(0, images.shape[0], batch_size):
        rows = slice(start, min(start + batch_size, images.shape[0]))
        batch = _normalise(images[rows].to(device), mean, std)
        logits, features = model(batch)
        chosen = logits.argmax(1) if classes is None else classes[rows].to(device)
        raw = map_fn(model, features, chosen).float()
        with warnings.catch_warnings():
            # A constant map is rare but legitimate (a dead class); it becomes zeros and the
            # count is reported once per evaluation by evaluate_localization.
            warnings.simplefilter("ignore")
            maps = normalize_maps(upsample_maps(raw, size, mode="bicubic"), mode="minmax")
        yield rows, logits.float().cpu(), maps.cpu()


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


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def evaluate_localization(model: torch.nn.Module, data: LocalizationSet, *,
                          mean: Sequence[float], std: Sequence[float],
                          map_fn: MapFn = cam_map_fn, cam_threshold: float = 0.2,
                          thresholds: np.ndarray | None = None, keep_maps: bool = False,
                          batch_size: int = 256, device=None) -> dict:
    """Every standard metric of ``model`` on ``data`` (the map of the true class per image).

    Returns:
        :meth:`LocalizationEvaluator.compute`'s dict (percentages, ``loc_curve`` over the
        thresholds), plus ``degenerate_maps`` (maps that normalised to zeros), with part boxes
        ``part_hit_rate`` (percent of maps whose maximum falls in the part box), and with
        ``keep_maps`` the score maps ``maps`` ``(N, S, S)`` float16 and ``predictions``.
    """
    evaluator = LocalizationEvaluator(thresholds=thresholds, cam_threshold=cam_threshold)
    kept, predictions, hits = [], [], []
    degenerate = 0
    for rows, logits, maps in predict_maps(model, data.images, classes=data.labels, mean=mean,
                                           std=std, map_fn=map_fn, batch_size=batch_size,
                                           device=device):
        degenerate += int((maps.flatten(1).amax(1) == 0).sum())
        evaluator.accumulate(
            maps.numpy(), data.boxes[rows], logits=logits, labels=data.labels[rows],
            masks=None if data.masks is None else data.masks[rows].numpy())
        if data.part_boxes is not None:
            hits.append(_part_hits(maps, data.part_boxes[rows]))
        if keep_maps:
            kept.append(maps.half())
            predictions.append(logits.argmax(1))
    results = evaluator.compute()
    results["degenerate_maps"] = degenerate
    if degenerate:
        warnings.warn(f"{degenerate} of {len(data)} score maps were constant or non-finite and "
                      "were scored as all-zero maps.", stacklevel=2)
    if hits:
        results["part_hit_rate"] = float(np.concatenate(hits).mean() * 100)
    if keep_maps:
        results["maps"] = torch.cat(kept)
        results["predictions"] = torch.cat(predictions)
    return results


def cached_evaluation(run_dir: str | os.PathLike, split: str, model_loader: Callable[[], torch.nn.Module],
                      data: LocalizationSet, config: TrainConfig, *, map_name: str = "cam",
                      map_fn: MapFn = cam_map_fn, cam_threshold: float = 0.2,
                      keep_maps: bool = False) -> dict:
    """:func:`evaluate_localization`, cached in ``run_dir`` as ``eval-<split>-<map>-<hash>.json``.

    The key covers the split's fingerprint, the map name and the fixed threshold; the model
    is loaded (``model_loader()``) only when something must be computed. With ``keep_maps``
    the score maps are cached as float16 ``.npy`` beside the JSON.
    """
    run_dir = Path(run_dir)
    key = hashlib.sha256(json.dumps([data.fingerprint(), map_name, cam_threshold],
                                    sort_keys=True).encode()).hexdigest()[:10]
    stem = run_dir / f"eval-{split}-{map_name}-{key}"
    json_path, maps_path, preds_path = (stem.with_suffix(".json"), Path(f"{stem}-maps.npy"),
                                        Path(f"{stem}-predictions.npy"))
    if json_path.exists() and (not keep_maps or maps_path.exists()):
        results = json.loads(json_path.read_text())
        for name in ("thresholds", "loc_curve", "pxap_precision", "pxap_recall", "pxap_thresholds"):
            if name in results:
                results[name] = np.asarray(results[name])
        if keep_maps:
            results["maps"] = torch.from_numpy(np.load(maps_path))
            results["predictions"] = torch.from_numpy(np.load(preds_path))
        results["cached"] = True
        return results
    results = evaluate_localization(model_loader(), data, mean=config.mean, std=config.std,
                                    map_fn=map_fn, cam_threshold=cam_threshold, keep_maps=keep_maps)
    stored = {k: v for k, v in results.items() if k not in ("maps", "predictions")}
    if keep_maps:
        np.save(maps_path, results["maps"].numpy())
        np.save(preds_path, results["predictions"].numpy())
    atomic_write_text(json.dumps(_jsonable(stored)) + "\n", json_path)
    results["cached"] = False
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
    """Metrics of given score maps ``(N, S, S)`` against the split's boxes (and masks)."""
    evaluator = LocalizationEvaluator(cam_threshold=cam_threshold)
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
                              std: Sequence[float], map_fn: MapFn = cam_map_fn,
                              fallback: float = 0.2, batch_size: int = 256, device=None) -> dict:
    """GT-known and top-1 localization when every image gets its own threshold.

    Each chooser sees the score maps of the true class, computed as :func:`predict_maps` does
    for :func:`evaluate_localization`, and returns one threshold per image; an image it leaves
    undecided (NaN) is scored at ``fallback`` and counted.

    Returns:
        ``{"num_images", "top1_cls", "degenerate_maps", "choosers": {name: {"gt_known_loc",
        "top1_loc", "undecided", "thresholds", "ious"}}}``: accuracies in percent, the
        thresholds used and the IoUs as ``(N,)`` float64 arrays.
    """
    thresholds = {name: [] for name in choosers}
    ious = {name: [] for name in choosers}
    undecided = dict.fromkeys(choosers, 0)
    correct_cls = []
    degenerate = 0
    for rows, logits, maps in predict_maps(model, data.images, classes=data.labels, mean=mean,
                                           std=std, map_fn=map_fn, batch_size=batch_size,
                                           device=device):
        degenerate += int((maps.flatten(1).amax(1) == 0).sum())
        correct_cls.append((logits.argmax(1) == data.labels[rows]).numpy())
        for name, choose in choosers.items():
            chosen = np.asarray(choose(maps), dtype=np.float64).reshape(-1)
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
               "degenerate_maps": degenerate, "choosers": {}}
    for name in choosers:
        iou = np.concatenate(ious[name])
        results["choosers"][name] = {
            "gt_known_loc": float((iou >= 0.5).mean() * 100),
            "top1_loc": float(((iou >= 0.5) & top1).mean() * 100),
            "undecided": undecided[name], "thresholds": np.concatenate(thresholds[name]),
            "ious": iou}
    return results


def cached_image_threshold_evaluation(run_dir: str | os.PathLike, split: str,
                                      model_loader: Callable[[], torch.nn.Module],
                                      data: LocalizationSet, config: TrainConfig,
                                      choosers: Mapping[str, ThresholdFn], *,
                                      map_name: str = "cam", map_fn: MapFn = cam_map_fn,
                                      fallback: float = 0.2) -> dict:
    """:func:`evaluate_image_thresholds`, cached in ``run_dir`` as
    ``eval-<split>-<map>-per-image-<hash>.json``.

    The key covers the split's fingerprint, the map name, the chooser names and ``fallback``:
    a chooser's name must identify its rule (give a changed rule a new name).
    """
    key = hashlib.sha256(json.dumps([data.fingerprint(), map_name, sorted(choosers), fallback],
                                    sort_keys=True).encode()).hexdigest()[:10]
    path = Path(run_dir) / f"eval-{split}-{map_name}-per-image-{key}.json"
    if path.exists():
        results = json.loads(path.read_text())
        for entry in results["choosers"].values():
            entry["thresholds"] = np.asarray(entry["thresholds"])
            entry["ious"] = np.asarray(entry["ious"])
        results["cached"] = True
        return results
    results = evaluate_image_thresholds(model_loader(), data, choosers, mean=config.mean,
                                        std=config.std, map_fn=map_fn, fallback=fallback)
    atomic_write_text(json.dumps(_jsonable(results)) + "\n", path)
    results["cached"] = False
    return results


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


def cached_result(run_dir: str | os.PathLike, name: str, key: Any,
                  compute: Callable[[], Mapping[str, Any]]) -> dict:
    """``compute()``, cached in ``run_dir`` as ``<name>-<hash of key>.json``.

    For derived results that are slow to recompute (detection sweeps, threshold tuning); numpy
    arrays are stored as lists and come back as lists. ``key`` (JSON-serialisable) must name
    everything the result depends on besides the run itself, e.g. a data fingerprint and the
    settings.
    """
    digest = hashlib.sha256(json.dumps(_jsonable(key), sort_keys=True).encode()).hexdigest()[:10]
    path = Path(run_dir) / f"{name}-{digest}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = _jsonable(dict(compute()))
    atomic_write_text(json.dumps(result) + "\n", path)
    return result
