"""The standard WSOL metrics and COCO-style detection metrics.

Localization (``LocalizationEvaluator``), following the protocol of Choe et al., *Evaluating
Weakly Supervised Object Localization Methods Right* (CVPR 2020) and its reference code
(clovaai/wsolevaluation):

* top-1 / top-5 classification accuracy;
* GT-known localization: the score map of the true class, binarised at ``cam_threshold`` (0.2 of
  its maximum, Zhou et al. 2016), the box of its largest component, correct at IoU >= 0.5 with
  any ground-truth box; top-1 (top-5) localization additionally needs the true class to be the
  top-1 (among the top-5) prediction;
* MaxBoxAcc: the GT-known accuracy at the best threshold (largest component, IoU 0.5), and
  MaxBoxAccV2: its mean over IoU 0.3 / 0.5 / 0.7 with boxes of all components;
* PxAP: the area under the pixel precision-recall curve over a set of score thresholds.

The box steps (8-bit binarisation, contours, inclusive IoU) live in ``wsolkit.boxes``. All
accuracies are percentages. The evaluator streams: it keeps per-threshold counters and two score
histograms, never the maps, so its memory does not grow with the number of images.

Detection on COCO (``coco_detection_eval``) wraps pycocotools' ``COCOeval`` with caller-chosen IoU
thresholds, as Barz & Denzler (VISAPP 2022, Sec. 4.4.1) report mAP at IoU 0 and 0.25.
``COCOeval`` handles IoU 0 as the paper intends: it starts each match at ``min(t, 1 - 1e-10)`` and
skips a ground truth only when its IoU is ``< t``, so at ``t = 0`` a detection matches any
unmatched ground-truth box of its class in the image, overlapping or not (multi-label
classification). No epsilon is needed; the tests check this on a hand-made case.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from numba import njit

from wsolkit.boxes import best_iou_per_threshold, binarize_thresholds
from wsolkit.cam import topk_classes

__all__ = [
    "MetricInputError",
    "MetricWarning",
    "LocalizationEvaluator",
    "resize_masks",
    "pxap_from_histograms",
    "detections_to_coco",
    "CocoDetectionResult",
    "coco_detection_eval",
    "PrecisionRecallCurve",
    "precision_recall_curve",
    "precision_at_recall",
]

_LOC_IOU = 0.5  # the IoU of GT-known, top-1/top-5 loc and the original MaxBoxAcc


class MetricInputError(ValueError):
    """Inputs given to a metric have the wrong shape, type or values, or cannot be scored."""


class MetricWarning(UserWarning):
    """A metric left out part of its input by a documented rule; the message gives the count."""


def _to_numpy(x, name: str, dtype=None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise MetricInputError(f"{name} could not be read as a numeric array: {err}") from err


def resize_masks(masks: Sequence[np.ndarray | torch.Tensor] | np.ndarray | torch.Tensor,
                 size: tuple[int, int]) -> np.ndarray:
    """Resizes masks to the score-map size with nearest-neighbour sampling.

    Nearest sampling takes source pixel ``min(floor(dst * (1 / (dst_size / src_size))),
    src_size - 1)`` in float64, exactly the rule of OpenCV's ``INTER_NEAREST`` that the
    reference's masks go through (checked against OpenCV for every source size up to 2048 in
    the tests). The scale is the reciprocal of ``dst / src``, as OpenCV computes it, not
    ``src / dst``: the two round differently for some sizes, and ``torch``'s ``"nearest"``
    (which uses ``src / dst``) keeps a different pixel for 145 of the 2,048 widths that shrink
    to 224. Values are kept as they are.

    Args:
        masks: ``(N, h, w)`` array or tensor, or a sequence of ``N`` masks ``(h_i, w_i)`` of
            different sizes (e.g. at the original image sizes).
        size: score-map size ``(H, W)``.

    Returns:
        ``(N, H, W)`` numpy array with the dtype of the input masks.
    """
    if len(size) != 2 or min(size) < 1:
        raise MetricInputError(f"size = {size!r}; expected (H, W) with positive integers.")
    out = []
    for i, mask in enumerate(masks):
        m = _to_numpy(mask, f"masks[{i}]")
        if m.ndim != 2:
            raise MetricInputError(f"masks[{i}] has shape {m.shape}; expected (h, w).")
        rows = _nearest_source(m.shape[0], int(size[0]))
        cols = _nearest_source(m.shape[1], int(size[1]))
        out.append(m[rows[:, None], cols[None, :]])
    if not out:
        return np.zeros((0, int(size[0]), int(size[1])), dtype=np.uint8)
    return np.stack(out)


def _nearest_source(source: int, target: int) -> np.ndarray:
    """OpenCV's ``INTER_NEAREST`` source index of each target pixel along one axis."""
    inverse_scale = 1.0 / (target / source)
    index = np.floor(np.arange(target, dtype=np.float64) * inverse_scale).astype(np.int64)
    return np.minimum(index, source - 1)


def pxap_from_histograms(fg_hist: np.ndarray, bg_hist: np.ndarray,
                         thresholds: np.ndarray) -> dict:
    """PxAP from score histograms of foreground and background pixels (reference formula).

    Bins are ``[t_0, t_1), ..., [t_{T-1}, 1), [1, 2), [2, 3]``. Counting down from the top bin,
    reverse cumulative sums give TP and FP for "positive when score >= edge"; then
    ``AP = sum_j precision[j] * (recall[j] - recall[j - 1])`` over ``j >= 1`` with
    ``TP + FP > 0``, times 100.

    Args:
        fg_hist: ``(T + 2,)`` counts of foreground pixel scores per bin.
        bg_hist: ``(T + 2,)`` counts of background pixel scores per bin.
        thresholds: ``(T,)`` lower bin edges ``t_0 = 0 < ... < t_{T-1} < 1``.

    Returns:
        dict with ``pxap`` (float, percent) and the curve points used in the sum, from the highest
        score threshold down: ``pxap_thresholds``, ``pxap_precision``, ``pxap_recall`` (``(P,)``
        float64 arrays, fractions in ``[0, 1]``).

    Raises:
        MetricInputError: when there is no foreground pixel.
    """
    edges = np.append(np.asarray(thresholds, dtype=np.float64), [1.0, 2.0, 3.0])
    fg = np.asarray(fg_hist, dtype=np.float64)
    bg = np.asarray(bg_hist, dtype=np.float64)
    tp = fg[::-1].cumsum()
    fp = bg[::-1].cumsum()
    num_fg = fg.sum()
    if num_fg <= 0:
        raise MetricInputError(
            "PxAP: no foreground pixel in the evaluated masks (after removing the ignore "
            "region); give masks with object pixels (mask > 0.5).")
    used = (tp + fp) != 0
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = tp / (tp + fp)
    recall = tp / num_fg
    pxap = float((precision[1:] * np.diff(recall))[used[1:]].sum() * 100)
    # Index j counts scores >= edges[T + 1 - j], i.e. the edges from 2 down to t_0.
    score_edges = edges[-2::-1]
    keep = np.flatnonzero(used)
    return {"pxap": pxap, "pxap_thresholds": score_edges[keep],
            "pxap_precision": precision[keep], "pxap_recall": recall[keep]}


_LUT_CELLS = 4096


def _bin_lookup(edges: np.ndarray) -> np.ndarray:
    """``(_LUT_CELLS + 1,)`` int64: for cell ``c``, a bin index no larger than the bin of any
    score ``s`` with ``int(s * _LUT_CELLS) == c``.

    It counts the edges below ``c / _LUT_CELLS - 1e-9``; every such edge is ``<= s`` because
    ``s >= c / _LUT_CELLS`` up to rounding far smaller than the margin.
    """
    cells = np.arange(_LUT_CELLS + 1) / _LUT_CELLS - 1e-9
    return np.maximum(np.searchsorted(edges, cells, side="left") - 1, 0).astype(np.int64)


@njit(cache=True, nogil=True)
def _add_to_histograms(maps, fg, bg, edges, lut, fg_hist, bg_hist):
    """Adds every foreground / background score in ``[0, 1]`` to its bin
    ``edges[k] <= s < edges[k + 1]`` (``np.histogram``'s rule): a table lookup gives a lower
    bound of ``k``, a short exact scan up the edges finishes it. One pass, no copies."""
    scores = maps.ravel()
    is_fg = fg.ravel()
    is_bg = bg.ravel()
    for p in range(scores.size):
        if is_fg[p]:
            hist = fg_hist
        elif is_bg[p]:
            hist = bg_hist
        else:
            continue
        s = scores[p]
        k = lut[int(s * (lut.size - 1))]
        while edges[k + 1] <= s:
            k += 1
        hist[k] += 1


class LocalizationEvaluator:
    """Streams score maps and computes the WSOL localization and classification metrics.

    Usage::

        evaluator = LocalizationEvaluator()
        for images, labels, boxes, sizes in batches:
            logits, features = model(images)
            maps = cams_to_score_maps(features["cam"], model.classifier.weight, labels, (224, 224))
            gt = [rescale_boxes(b, size, (224, 224)) for b, size in zip(boxes, sizes)]
            evaluator.accumulate(maps, gt, logits=logits, labels=labels)
        results = evaluator.compute()  # results["max_box_acc_v2"], results["top1_loc"], ...

    Args:
        thresholds: ``(T,)`` score-map thresholds, fractions of each map's maximum, evaluated in
            the reference 8-bit protocol; default ``binarize_thresholds(0.01)`` (0.00 ... 0.99).
        iou_thresholds: IoU values averaged by MaxBoxAccV2.
        cam_threshold: the fixed threshold of GT-known / top-1 / top-5 loc (Zhou et al. 2016).
            It is evaluated exactly, as one more threshold of the same protocol, when it is not
            among ``thresholds``; the curves and maxima still range over ``thresholds`` only.
        image_size: optional ``(H, W)``; when given, every score map must have this size.
        pxap_bins: ``(B,)`` lower bin edges of the PxAP histograms, increasing below 1 and
            starting at 0 (checked when masks arrive); default ``thresholds``.
        convention: box convention of ``wsolkit.boxes``: ``"reference"`` (the 8-bit protocol)
            or ``"pixel"``.
        per_image: also keep, per image, whether its box is correct at every threshold, the
            IoU of its all-component boxes at every threshold and whether its class is correct
            (for intervals over the test images, :mod:`wsolkit.reporting`).

    Raises:
        MetricInputError: on malformed thresholds or an unknown convention.
    """

    def __init__(self, thresholds: Sequence[float] | np.ndarray | None = None,
                 iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7), cam_threshold: float = 0.2,
                 image_size: tuple[int, int] | None = None,
                 pxap_bins: Sequence[float] | np.ndarray | None = None,
                 convention: str = "reference", per_image: bool = False):
        self.per_image = bool(per_image)
        thresholds = binarize_thresholds(0.01) if thresholds is None else thresholds
        self.thresholds = self._check_thresholds(thresholds, "thresholds")
        self.iou_thresholds = tuple(float(d) for d in iou_thresholds)
        if not self.iou_thresholds or not all(0 <= d <= 1 for d in self.iou_thresholds):
            raise MetricInputError(
                f"iou_thresholds = {iou_thresholds!r}; expected a non-empty sequence in [0, 1].")
        self.cam_threshold = float(cam_threshold)
        if not 0 <= self.cam_threshold < 1:
            raise MetricInputError(f"cam_threshold = {cam_threshold!r}; expected 0 <= t < 1.")
        if convention not in ("reference", "pixel"):
            raise MetricInputError(
                f"convention = {convention!r}; expected 'reference' or 'pixel' (wsolkit.boxes).")
        self.convention = convention
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        bins = self.thresholds if pxap_bins is None else pxap_bins
        self.pxap_bins = self._check_thresholds(bins, "pxap_bins")
        self._pxap_edges = np.append(self.pxap_bins, [1.0, 2.0, 3.0])
        self._pxap_lut = _bin_lookup(self._pxap_edges)
        # Largest-component boxes are scored at the thresholds plus the exact cam_threshold.
        self._box_thresholds = np.union1d(self.thresholds, [self.cam_threshold])
        self._curve_index = np.searchsorted(self._box_thresholds, self.thresholds)
        self._cam_index = int(np.searchsorted(self._box_thresholds, self.cam_threshold))
        self.reset()

    @staticmethod
    def _check_thresholds(values, name: str) -> np.ndarray:
        t = _to_numpy(values, name, dtype=np.float64)
        if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)):
            raise MetricInputError(f"{name} must be a non-empty 1-D array of finite values.")
        if t[0] < 0 or t[-1] >= 1 or np.any(np.diff(t) <= 0):
            raise MetricInputError(
                f"{name} must increase strictly within [0, 1), got {t[0]} ... {t[-1]} "
                f"({t.size} values); use wsolkit.boxes.binarize_thresholds(interval).")
        return t

    def reset(self) -> None:
        """Forgets everything accumulated so far."""
        self._num_images = 0
        self._num_batches = 0
        self._map_shape: tuple[int, int] | None = None
        self._correct_largest = np.zeros(self._box_thresholds.size, dtype=np.int64)
        self._correct_all = np.zeros((len(self.iou_thresholds), self.thresholds.size),
                                     dtype=np.int64)
        self._with_boxes: bool | None = None
        self._with_cls: bool | None = None
        self._with_top5 = True
        self._with_masks: bool | None = None
        self._top1_cls = self._top5_cls = self._top1_loc = self._top5_loc = 0
        self._fg_hist = np.zeros(self.pxap_bins.size + 2, dtype=np.int64)
        self._bg_hist = np.zeros(self.pxap_bins.size + 2, dtype=np.int64)
        self._per_image_correct: list[np.ndarray] = []
        self._per_image_iou_all: list[np.ndarray] = []
        self._per_image_top1: list[np.ndarray] = []

    def _check_maps(self, score_maps) -> np.ndarray:
        # float64 as in the reference (its maps are float64 before binarisation).
        maps = _to_numpy(score_maps, "score_maps", dtype=np.float64)
        where = f"accumulate call {self._num_batches}"
        if maps.ndim != 3:
            raise MetricInputError(
                f"{where}: score_maps has shape {maps.shape}; expected (N, H, W), the map of the "
                "ground-truth class of each image.")
        if self.image_size is not None and maps.shape[1:] != self.image_size:
            raise MetricInputError(
                f"{where}: score_maps has shape {maps.shape} but image_size is "
                f"{self.image_size}; upsample the maps to (H, W) = {self.image_size}.")
        finite = np.isfinite(maps).all(axis=(1, 2))
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise MetricInputError(
                f"{where}: score map at batch index {bad[0]} holds NaN or inf ({bad.size} such "
                "maps in this batch); normalise with wsolkit.cam.normalize_maps, which turns "
                "them into zeros and counts them.")
        outside = (maps.min(axis=(1, 2)) < 0) | (maps.max(axis=(1, 2)) > 1)
        if outside.any():
            i = np.flatnonzero(outside)[0]
            raise MetricInputError(
                f"{where}: score map at batch index {i} has values in [{maps[i].min()}, "
                f"{maps[i].max()}], outside [0, 1] ({int(outside.sum())} such maps in this "
                "batch); normalise with wsolkit.cam.normalize_maps first.")
        return maps

    def _check_boxes(self, gt_boxes, num: int) -> list[np.ndarray]:
        where = f"accumulate call {self._num_batches}"
        if len(gt_boxes) != num:
            raise MetricInputError(
                f"{where}: {len(gt_boxes)} ground-truth box sets for {num} score maps; give one "
                "(G_i, 4) array per image.")
        boxes = []
        for i, b in enumerate(gt_boxes):
            arr = _to_numpy(b, f"gt_boxes[{i}]", dtype=np.float64)
            if arr.ndim != 2 or arr.shape[1] != 4:
                raise MetricInputError(
                    f"{where}: gt_boxes[{i}] has shape {arr.shape}; expected (G, 4) "
                    "[x1, y1, x2, y2] in score-map pixels.")
            if arr.shape[0] == 0:
                raise MetricInputError(
                    f"{where}: image at batch index {i} has no ground-truth box; localization "
                    "is undefined for it, so remove it from the evaluation set.")
            if np.any(arr[:, 2] < arr[:, 0]) or np.any(arr[:, 3] < arr[:, 1]):
                raise MetricInputError(
                    f"{where}: gt_boxes[{i}] = {arr.tolist()} has x2 < x1 or y2 < y1; expected "
                    "[x1, y1, x2, y2].")
            # A box reaches at most the map's width and height (the reference's int(x * 224 /
            # w) gives 224 for a box at the image's edge); beyond that it was rescaled with
            # the wrong size, (w, h) for (h, w) say, or not rescaled at all.
            if self._map_shape is not None:
                height, width = self._map_shape
                if (not np.isfinite(arr).all() or arr.min() < 0 or arr[:, 2].max() > width
                        or arr[:, 3].max() > height):
                    raise MetricInputError(
                        f"{where}: gt_boxes[{i}] = {arr.tolist()} lies outside the {height} x "
                        f"{width} score map; rescale the boxes to the map with "
                        "wsolkit.boxes.rescale_boxes(boxes, from_size=(H, W) of the image, "
                        "to_size=(H, W) of the map).")
            boxes.append(arr)
        return boxes

    def _classification(self, logits, preds, labels, num: int):
        where = f"accumulate call {self._num_batches}"
        if logits is not None and preds is not None:
            raise MetricInputError(f"{where}: give logits or preds, not both.")
        if (logits is None and preds is None) != (labels is None):
            raise MetricInputError(
                f"{where}: classification needs both labels and logits (or preds); got "
                f"labels={'given' if labels is not None else None}, "
                f"logits/preds={'given' if (logits, preds) != (None, None) else None}.")
        if labels is None:
            return None
        labels_np = _to_numpy(labels, "labels").reshape(-1)
        if labels_np.shape != (num,):
            raise MetricInputError(
                f"{where}: labels has {labels_np.size} entries for {num} score maps.")
        if logits is not None:
            scores = logits if isinstance(logits, torch.Tensor) else torch.as_tensor(
                _to_numpy(logits, "logits"))
            if scores.ndim != 2 or scores.shape[0] != num:
                raise MetricInputError(
                    f"{where}: logits has shape {tuple(scores.shape)}; expected ({num}, C).")
            ranked = topk_classes(scores, min(5, scores.shape[1])).cpu().numpy()
            has_top5 = True
        else:
            ranked = _to_numpy(preds, "preds")
            ranked = ranked[:, None] if ranked.ndim == 1 else ranked
            if ranked.ndim != 2 or ranked.shape[0] != num or ranked.shape[1] == 0:
                raise MetricInputError(
                    f"{where}: preds has shape {ranked.shape}; expected ({num},) or ({num}, k) "
                    "class indices, best first.")
            has_top5 = ranked.shape[1] >= 5
        top1 = ranked[:, 0] == labels_np
        top5 = (ranked[:, :5] == labels_np[:, None]).any(axis=1)
        return top1, top5, has_top5

    def _masks(self, masks, ignore, shape):
        where = f"accumulate call {self._num_batches}"
        if masks is None:
            if ignore is not None:
                raise MetricInputError(f"{where}: ignore given without masks.")
            return None
        if self.pxap_bins[0] != 0:
            raise MetricInputError(
                f"{where}: the PxAP bins start at {self.pxap_bins[0]}; they must start at 0.0, "
                "or pixels scoring below the first edge would go uncounted. Pass pxap_bins, "
                "e.g. binarize_thresholds(0.01).")
        fg = _to_numpy(masks, "masks")
        if fg.shape != shape:
            raise MetricInputError(
                f"{where}: masks has shape {fg.shape} but score_maps {shape}; resize the masks "
                "with wsolkit.metrics.resize_masks(masks, (H, W)).")
        fg = self._binary(fg, "masks", where)
        if ignore is None:
            return fg, ~fg
        ign = _to_numpy(ignore, "ignore")
        if ign.shape != shape:
            raise MetricInputError(
                f"{where}: ignore has shape {ign.shape} but score_maps {shape}; resize it with "
                "resize_masks as well.")
        ign = self._binary(ign, "ignore", where)
        # The ignore region is the ignore box minus the foreground (reference), so the
        # background is what lies outside both.
        return fg, ~fg & ~ign

    @staticmethod
    def _binary(values: np.ndarray, name: str, where: str) -> np.ndarray:
        """A 0/1 mask as bool; any other value is an error (a combined 0/1/255 mask with its
        ignore pixels at 255 would otherwise count them as foreground)."""
        if values.dtype == bool:
            return values
        odd = (values != 0) & (values != 1)
        if odd.any():
            seen = np.unique(values[odd])[:5].tolist()
            raise MetricInputError(
                f"{where}: {name} holds values other than 0 and 1 ({seen} ...); give the "
                "foreground as 0/1 and the ignore region separately as ignore= (a combined "
                "mask with 255 for 'ignore' must be split first).")
        return values == 1

    def _check_consistent(self, attr: str, given: bool, what: str) -> None:
        seen = getattr(self, attr)
        if seen is not None and seen != given:
            raise MetricInputError(
                f"accumulate call {self._num_batches}: {what} "
                f"{'given' if given else 'missing'}, unlike the earlier calls; give it for every "
                "batch or for none.")
        setattr(self, attr, given)

    def accumulate(self, score_maps, gt_boxes, logits=None, labels=None, masks=None,
                   ignore=None, preds=None) -> None:
        """Adds a batch of score maps to the counters.

        Args:
            score_maps: ``(N, H, W)`` float array or tensor in ``[0, 1]``, the map of the
                ground-truth class of each image (``wsolkit.cam.cams_to_score_maps``).
            gt_boxes: ``N`` arrays ``(G_i, 4)``, ``G_i >= 1``, ``[x1, y1, x2, y2]`` in
                score-map pixels (``wsolkit.boxes.rescale_boxes``), or ``None`` for a
                mask-only evaluation (PxAP and classification, as the reference does for
                OpenImages).
            logits: optional ``(N, C)`` class scores, for top-1 / top-5 classification and loc.
            labels: ``(N,)`` true classes; required with ``logits`` or ``preds``.
            masks: optional ``(N, H, W)`` ground-truth masks at score-map size, foreground
                ``> 0.5``, for PxAP.
            ignore: optional ``(N, H, W)`` ignore-box masks (``> 0.5``); their pixels outside
                the foreground are left out of PxAP.
            preds: optional ``(N,)`` or ``(N, k)`` predicted classes, best first, instead of
                ``logits``; top-5 needs ``k >= 5``.

        Raises:
            MetricInputError: on NaN / inf / out-of-range maps (naming the batch index), shape
                mismatches (naming both shapes), images without boxes, or inputs given for some
                batches but not others.
        """
        maps = self._check_maps(score_maps)
        self._map_shape = maps.shape[1:]
        boxes = None if gt_boxes is None else self._check_boxes(gt_boxes, maps.shape[0])
        cls = self._classification(logits, preds, labels, maps.shape[0])
        mask_data = self._masks(masks, ignore, maps.shape)
        if boxes is None and mask_data is None:
            raise MetricInputError(
                f"accumulate call {self._num_batches}: neither gt_boxes nor masks given; "
                "nothing to localize against.")
        self._check_consistent("_with_boxes", boxes is not None, "gt_boxes")
        self._check_consistent("_with_cls", cls is not None, "classification (logits, labels)")
        self._check_consistent("_with_masks", mask_data is not None, "masks")
        if maps.shape[0] == 0:
            self._num_batches += 1
            return

        if boxes is not None:
            largest = best_iou_per_threshold(maps, boxes, self._box_thresholds, mode="largest",
                                             convention=self.convention)
            gt_known = largest >= _LOC_IOU
            self._correct_largest += gt_known.sum(axis=0)
            if self.per_image:
                self._per_image_correct.append(gt_known[:, self._curve_index])
            gt_known = gt_known[:, self._cam_index]
            every = best_iou_per_threshold(maps, boxes, self.thresholds, mode="all",
                                           convention=self.convention)
            for d, delta in enumerate(self.iou_thresholds):
                self._correct_all[d] += (every >= delta).sum(axis=0)
            if self.per_image:
                # float32 keeps every comparison with 0.3 / 0.5 / 0.7 exact for maps up to
                # ~500 px: an IoU of integer boxes is a / b with b <= H W, so it lies at least
                # 1 / (10 H W) from those thresholds, above float32's rounding.
                self._per_image_iou_all.append(every.astype(np.float32))
        if cls is not None:
            top1, top5, has_top5 = cls
            self._top1_cls += int(top1.sum())
            if self.per_image:
                self._per_image_top1.append(np.asarray(top1, dtype=bool))
            self._top5_cls += int(top5.sum())
            if boxes is not None:
                self._top1_loc += int((top1 & gt_known).sum())
                self._top5_loc += int((top5 & gt_known).sum())
            self._with_top5 = self._with_top5 and has_top5
        if mask_data is not None:
            fg, bg = mask_data
            _add_to_histograms(np.ascontiguousarray(maps), np.ascontiguousarray(fg),
                               np.ascontiguousarray(bg), self._pxap_edges, self._pxap_lut,
                               self._fg_hist, self._bg_hist)
        self._num_images += maps.shape[0]
        self._num_batches += 1

    def compute(self) -> dict:
        """Returns the metrics over everything accumulated (percentages).

        Returns:
            dict with

            * ``num_images``; with boxes: ``thresholds`` ``(T,)``, ``cam_threshold``,
            * ``gt_known_loc``: accuracy at ``cam_threshold`` (largest component, IoU 0.5);
            * ``loc_curve``: ``(T,)`` the same accuracy at every threshold;
            * ``max_box_acc`` and ``max_box_acc_threshold``: its maximum and the first
              threshold reaching it;
            * ``max_box_acc_v2``: mean over ``iou_thresholds`` of the best accuracy with all
              components; ``max_box_acc_v2_per_iou``, ``max_box_acc_v2_thresholds`` and
              ``box_acc_curves_all`` (``(T,)`` curves), dicts keyed by IoU;
            * with classification: ``top1_cls``, ``top1_loc`` (with boxes), and ``top5_cls``,
              ``top5_loc`` when logits (or at least 5 predictions per image) were given;
              top-5 over ``C < 5`` classes takes all ``C``;
            * with masks: ``pxap`` and its curve ``pxap_thresholds``, ``pxap_precision``,
              ``pxap_recall`` (see ``pxap_from_histograms``);
            * with ``per_image``: ``per_image_correct``, ``(N, T)`` bool, the largest box of
              image ``n`` at threshold ``t`` has IoU >= 0.5 (its column mean is ``loc_curve``);
              ``per_image_iou_all``, ``(N, T)`` float32, the best IoU of the boxes of all
              components (``(per_image_iou_all >= d).mean(0)`` is ``box_acc_curves_all[d]``,
              so MaxBoxAccV2 can be resampled over images); and with classification
              ``per_image_top1``, ``(N,)`` bool.

        Raises:
            MetricInputError: when nothing was accumulated, or for PxAP without foreground.
        """
        n = self._num_images
        if n == 0:
            raise MetricInputError("compute() before any score map was accumulated.")
        out = {"num_images": n}
        if self._with_boxes:
            out.update(self._box_metrics(n))
        if self._with_cls:
            out["top1_cls"] = self._top1_cls * 100.0 / n
            if self._with_boxes:
                out["top1_loc"] = self._top1_loc * 100.0 / n
            if self._with_top5:
                out["top5_cls"] = self._top5_cls * 100.0 / n
                if self._with_boxes:
                    out["top5_loc"] = self._top5_loc * 100.0 / n
        if self._with_masks:
            out.update(pxap_from_histograms(self._fg_hist, self._bg_hist, self.pxap_bins))
        if self.per_image and self._per_image_correct:
            out["per_image_correct"] = np.concatenate(self._per_image_correct)
            out["per_image_iou_all"] = np.concatenate(self._per_image_iou_all)
        if self.per_image and self._per_image_top1:
            out["per_image_top1"] = np.concatenate(self._per_image_top1)
        return out

    def _box_metrics(self, n: int) -> dict:
        curve = self._correct_largest[self._curve_index] * 100.0 / n
        best = int(np.argmax(curve))
        out = {
            "thresholds": self.thresholds.copy(),
            "cam_threshold": self.cam_threshold,
            "gt_known_loc": float(self._correct_largest[self._cam_index] * 100.0 / n),
            "loc_curve": curve,
            "max_box_acc": float(curve[best]),
            "max_box_acc_threshold": float(self.thresholds[best]),
        }
        curves_all = self._correct_all * 100.0 / n
        bests = curves_all.argmax(axis=1)
        out["max_box_acc_v2_per_iou"] = {
            d: float(curves_all[i, bests[i]]) for i, d in enumerate(self.iou_thresholds)}
        out["max_box_acc_v2_thresholds"] = {
            d: float(self.thresholds[bests[i]]) for i, d in enumerate(self.iou_thresholds)}
        out["max_box_acc_v2"] = float(np.mean(list(out["max_box_acc_v2_per_iou"].values())))
        out["box_acc_curves_all"] = {d: curves_all[i] for i, d in enumerate(self.iou_thresholds)}
        return out


def detections_to_coco(image_ids, boxes, scores, category_ids) -> list[dict]:
    """Detections as a COCO results list (``bbox`` is ``[x, y, width, height]``).

    Args:
        image_ids: ``(D,)`` COCO image ids, one per detection.
        boxes: ``(D, 4)`` ``[x1, y1, x2, y2]`` in original image pixels; ``width = x2 - x1``.
        scores: ``(D,)`` confidences.
        category_ids: ``(D,)`` COCO category ids.

    Returns:
        list of ``D`` dicts with ``image_id``, ``category_id``, ``bbox``, ``score``.

    Raises:
        MetricInputError: on different lengths, non-finite values or ``x2 < x1``.
    """
    ids = _to_numpy(image_ids, "image_ids").reshape(-1)
    cats = _to_numpy(category_ids, "category_ids").reshape(-1)
    conf = _to_numpy(scores, "scores", dtype=np.float64).reshape(-1)
    xyxy = _to_numpy(boxes, "boxes", dtype=np.float64).reshape(-1, 4)
    if not len(ids) == len(cats) == len(conf) == len(xyxy):
        raise MetricInputError(
            f"detections_to_coco: {len(ids)} image_ids, {len(xyxy)} boxes, {len(conf)} scores "
            f"and {len(cats)} category_ids; give one of each per detection.")
    if not (np.isfinite(xyxy).all() and np.isfinite(conf).all()):
        raise MetricInputError("detections_to_coco: boxes or scores hold NaN or inf.")
    bad = np.flatnonzero((xyxy[:, 2] < xyxy[:, 0]) | (xyxy[:, 3] < xyxy[:, 1]))
    if bad.size:
        raise MetricInputError(
            f"detections_to_coco: {bad.size} boxes have x2 < x1 or y2 < y1, first at index "
            f"{bad[0]}: {xyxy[bad[0]].tolist()}; expected [x1, y1, x2, y2].")
    return [{"image_id": int(i), "category_id": int(c),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
             "score": float(s)} for i, c, b, s in zip(ids, cats, xyxy, conf)]


@dataclass(frozen=True)
class CocoDetectionResult:
    """What ``coco_detection_eval`` measured.

    Attributes:
        iou_thresholds: the IoU thresholds, in the order given.
        mean_ap: IoU threshold -> mAP in percent (COCO's mean over classes with ground truth).
        per_class_ap: IoU threshold -> {category id -> AP in percent}; NaN for a category
            without ground truth in the evaluated images.
        recall_grid: ``(R,)`` COCO recall points, 0.00, 0.01, ..., 1.00.
        precision: ``(T, R, K)`` interpolated precision from ``COCOeval.eval['precision']``
            for the chosen area range and ``max_dets``; -1 where a category has no ground truth.
        category_ids: the ``K`` category ids, in the order of the last axis.
    """

    iou_thresholds: tuple[float, ...]
    mean_ap: dict[float, float]
    per_class_ap: dict[float, dict[int, float]]
    recall_grid: np.ndarray
    precision: np.ndarray
    category_ids: tuple[int, ...]


def evaluated_cocoeval(coco_gt, results: list[dict], ious: np.ndarray, *, max_dets: int = 100,
                       area: str = "all", image_ids: Sequence[int] | None = None,
                       category_ids: Sequence[int] | None = None, error=None):
    """pycocotools' bounding-box ``COCOeval`` with these settings, after ``evaluate()`` (the
    per-image matching; ``accumulate()`` is the caller's): the one place that sets it up, for
    :func:`coco_detection_eval` and the per-detection matching of
    :func:`wsolkit.evaluation.scenes.match_detections`.

    Args:
        coco_gt, results, max_dets, area, image_ids, category_ids: as
            :func:`coco_detection_eval`; ``ious`` the checked IoU thresholds.
        error: the exception class for a bad ``area`` (default :class:`MetricInputError`).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    error = error or MetricInputError
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        if results:
            coco_dt = coco_gt.loadRes(list(results))
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                               "categories": list(coco_gt.dataset["categories"]),
                               "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        params = evaluator.params
        if area not in params.areaRngLbl:
            raise error(f"area = {area!r}; expected one of {params.areaRngLbl}.")
        params.areaRng = [params.areaRng[params.areaRngLbl.index(area)]]
        params.areaRngLbl = [area]
        params.iouThrs = ious
        params.maxDets = [int(max_dets)]
        if image_ids is not None:
            params.imgIds = sorted(int(i) for i in image_ids)
        if category_ids is not None:
            params.catIds = sorted(int(c) for c in category_ids)
        evaluator.evaluate()
    return evaluator


def coco_detection_eval(coco_gt, results: list[dict],
                        iou_thresholds: Sequence[float] = (0.0, 0.25), max_dets: int = 100,
                        area: str = "all", image_ids: Sequence[int] | None = None,
                        category_ids: Sequence[int] | None = None) -> CocoDetectionResult:
    """COCO bounding-box AP at chosen IoU thresholds, computed by pycocotools' ``COCOeval``.

    ``COCOeval`` matches detections greedily by score per image and category and interpolates
    precision on 101 recall points; AP is the mean of that precision. At IoU 0 a detection matches
    any unmatched ground-truth box of its class in its image (see the module docstring).

    Args:
        coco_gt: ``pycocotools.coco.COCO`` with the ground truth.
        results: COCO results list (``detections_to_coco``); may be empty (AP 0).
        iou_thresholds: IoU thresholds, each in ``[0, 1]``.
        max_dets: detections kept per image and category, highest scores first (COCO's rule).
        area: COCO area range: ``"all"``, ``"small"``, ``"medium"`` or ``"large"``.
        image_ids: evaluate these images only (default: all ground-truth images).
        category_ids: evaluate these categories only (default: all).

    Returns:
        ``CocoDetectionResult``. A ``MetricWarning`` gives the count of categories without
        ground truth, which COCO leaves out of the mean.

    Raises:
        MetricInputError: for detections of unknown images or categories, bad IoU thresholds,
            or when no evaluated category has ground truth.
    """
    ious = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    if ious.size == 0 or np.any((ious < 0) | (ious > 1)) or np.unique(ious).size != ious.size:
        raise MetricInputError(
            f"iou_thresholds = {iou_thresholds!r}; expected distinct values in [0, 1].")
    known_images = set(coco_gt.getImgIds())
    known_cats = set(coco_gt.getCatIds())
    unknown_images = {r["image_id"] for r in results} - known_images
    unknown_cats = {r["category_id"] for r in results} - known_cats
    if unknown_images or unknown_cats:
        raise MetricInputError(
            f"coco_detection_eval: detections name {len(unknown_images)} image ids and "
            f"{len(unknown_cats)} category ids that the ground truth lacks (e.g. images "
            f"{sorted(unknown_images)[:5]}, categories {sorted(unknown_cats)[:5]}); COCOeval "
            "would drop them. Use the ground truth's ids.")
    evaluator = evaluated_cocoeval(coco_gt, results, ious, max_dets=max_dets, area=area,
                                   image_ids=image_ids, category_ids=category_ids)
    params = evaluator.params
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, 0]
    cats = tuple(int(c) for c in params.catIds)
    valid = precision > -1
    has_gt = valid.any(axis=(0, 1))
    if not has_gt.any():
        raise MetricInputError(
            "coco_detection_eval: no evaluated category has a ground-truth box in the evaluated "
            "images.")
    if not has_gt.all():
        warnings.warn(
            f"coco_detection_eval: {int((~has_gt).sum())} of {len(cats)} categories have no "
            "ground truth in the evaluated images; their AP is NaN and they are left out of the "
            "mAP (COCO's rule).", MetricWarning, stacklevel=2)
    mean_ap, per_class = {}, {}
    for t, iou in enumerate(ious.tolist()):
        p = precision[t]
        mean_ap[iou] = float(p[p > -1].mean() * 100)
        per_class[iou] = {
            c: float(p[:, k][p[:, k] > -1].mean() * 100) if has_gt[k] else float("nan")
            for k, c in enumerate(cats)}
    return CocoDetectionResult(iou_thresholds=tuple(ious.tolist()), mean_ap=mean_ap,
                               per_class_ap=per_class, recall_grid=np.asarray(params.recThrs),
                               precision=precision, category_ids=cats)


@dataclass(frozen=True)
class PrecisionRecallCurve:
    """Interpolated precision (fractions) on COCO's recall grid; ``precision`` is
    non-increasing."""

    recall: np.ndarray
    precision: np.ndarray


def precision_recall_curve(result: CocoDetectionResult, iou_threshold: float,
                           category_id: int | None = None) -> PrecisionRecallCurve:
    """The precision-recall curve of one IoU threshold from ``COCOeval``'s precision array.

    Args:
        result: from ``coco_detection_eval``.
        iou_threshold: one of ``result.iou_thresholds``.
        category_id: one category, or ``None`` for the mean over categories with ground truth
            (the curve whose mean is the mAP).

    Returns:
        ``PrecisionRecallCurve`` with ``recall`` ``(101,)`` = 0.00 ... 1.00 and ``precision``
        ``(101,)`` in ``[0, 1]``.

    Raises:
        MetricInputError: for an IoU threshold or category that was not evaluated, or a category
            without ground truth.
    """
    matches = np.flatnonzero(np.isclose(result.iou_thresholds, iou_threshold, rtol=0, atol=1e-9))
    if matches.size == 0:
        raise MetricInputError(
            f"iou_threshold {iou_threshold} was not evaluated; choose one of "
            f"{list(result.iou_thresholds)}.")
    p = result.precision[matches[0]]
    if category_id is None:
        keep = (p > -1).any(axis=0)
        curve = p[:, keep].mean(axis=1)
    else:
        if category_id not in result.category_ids:
            raise MetricInputError(
                f"category_id {category_id} was not evaluated; choose one of "
                f"{list(result.category_ids)}.")
        curve = p[:, result.category_ids.index(category_id)]
        if np.any(curve < 0):
            raise MetricInputError(
                f"category_id {category_id} has no ground truth in the evaluated images.")
    return PrecisionRecallCurve(recall=result.recall_grid.copy(), precision=curve.copy())


def precision_at_recall(curve: PrecisionRecallCurve, recall: float) -> float:
    """Interpolated precision at a recall level: the value at the first grid point ``>= recall``.

    COCO's precision is already the best precision at any recall at least as high, so this is
    "precision at recall >= ``recall``". Returns a fraction in ``[0, 1]``.

    Raises:
        MetricInputError: if ``recall`` is outside ``[0, 1]``.
    """
    if not 0 <= recall <= 1:
        raise MetricInputError(f"recall = {recall}; expected a value in [0, 1].")
    # The tolerance absorbs the rounding of np.linspace (0.3 must hit the grid point 0.30).
    index = int(np.searchsorted(curve.recall, recall - 1e-9, side="left"))
    return float(curve.precision[index])
