"""Evaluate a folder of anyone's score maps against a split's ground truth, the way
wsolevaluation's ``evaluate_wsol`` does, with every metric of the book.

Input: one ``<image id>.npy`` per image under a folder (the reference's layout: the id keeps its
sub-folders and extension, ``001.Black_footed_Albatross/x.jpg.npy``), or one ``.npz`` holding an
array per image id. Each map is 2-D, finite and in ``[0, 1]``; a map that is not at the
evaluation size (224 x 224, the reference's) is resized with OpenCV's bicubic interpolation and
min-max normalised, as the reference's inference does before it saves its maps. Ground-truth
boxes are rescaled to that size as the reference does (``int(coordinate * 224 / original)``),
masks with OpenCV's nearest-neighbour rule (foreground: any instance mask ``> 0.5``; ignore: the
ignore mask minus the foreground).

Nothing is skipped: a missing map, a map of the wrong dimension, NaN, values outside
``[0, 1]``, or a map whose image id the ground truth does not know is a :class:`ScoreMapError`
that names the file.

Output (:func:`evaluate_score_maps`): a JSON-ready dict with, per contour mode (``largest``,
the reference's default, and ``all``, its ``multi_contour_eval``), the box accuracy curve and
MaxBoxAcc at every IoU; MaxBoxAcc (largest, IoU 0.5), MaxBoxAccV2 (all, mean over the IoUs);
GT-known localization at the best threshold and at a given one; with predicted classes, top-1
and top-5 localization and classification; with masks, PxAP and its curve. The numbers are
computed as the reference computes them (``100 * correct / N`` in float64, the maximum over the
thresholds), so they agree with ``evaluate_wsol`` to the last digit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from wsolkit.data.metadata import Metadata
from wsolkit.data.openimages import load_instance_mask

__all__ = ["ScoreMapError", "ScoreMaps", "evaluate_score_maps", "format_results",
           "read_predictions"]

#: The evaluation size of the reference (its ``_RESIZE_LENGTH``).
REFERENCE_SIZE = 224


class ScoreMapError(ValueError):
    """A score map is missing, malformed, or names an image the ground truth does not know."""


class ScoreMaps:
    """The score maps of a folder of ``.npy`` files or of one ``.npz`` file, by image id.

    Args:
        path: the folder, or the ``.npz`` file.
        size: the evaluation size (square), default the reference's 224.
    """

    def __init__(self, path: str | os.PathLike, size: int = REFERENCE_SIZE) -> None:
        self.path = Path(path)
        self.size = int(size)
        if self.path.is_file() and self.path.suffix == ".npz":
            self._archive = np.load(self.path, allow_pickle=False)
        elif self.path.is_dir():
            self._archive = None
        else:
            raise ScoreMapError(f"{self.path}: neither a folder of <image id>.npy files nor a "
                                ".npz file of score maps.")

    def image_ids(self) -> set[str]:
        """Every image id there is a map for."""
        if self._archive is not None:
            return set(self._archive.files)
        return {p.relative_to(self.path).as_posix()[:-len(".npy")]
                for p in self.path.rglob("*.npy")}

    def where(self, image_id: str) -> str:
        if self._archive is not None:
            return f"{self.path}[{image_id!r}]"
        return str(self.path / f"{image_id}.npy")

    def load(self, image_id: str, out: np.ndarray | None = None) -> np.ndarray:
        """The map of ``image_id`` at the evaluation size, float64 in ``[0, 1]`` (written into
        ``out``, a ``(size, size)`` float64 array, when given).

        Raises:
            ScoreMapError: missing, not 2-D, not finite, or outside ``[0, 1]``.
        """
        where = self.where(image_id)
        try:
            if self._archive is not None:
                value = self._archive[image_id]
            else:
                value = np.load(self.path / f"{image_id}.npy", allow_pickle=False)
        except (FileNotFoundError, KeyError):
            raise ScoreMapError(f"{where}: no score map for image {image_id!r}; expected one "
                                "map per image of the split.") from None
        except (ValueError, OSError) as error:
            raise ScoreMapError(f"{where}: not a readable .npy array ({error}).") from None
        value = np.asarray(value)
        if value.ndim != 2 or min(value.shape) < 1 or not np.issubdtype(value.dtype, np.number):
            raise ScoreMapError(f"{where}: a {value.dtype} array of shape {value.shape}; "
                                "expected one 2-D map (H, W) of the image's class.")
        # min and max are NaN when any value is; a NaN-free map is then checked for range.
        low, high = float(value.min()), float(value.max())
        if not (np.isfinite(low) and np.isfinite(high)):
            bad = int((~np.isfinite(value.astype(np.float64))).sum())
            raise ScoreMapError(f"{where}: {bad} NaN or inf values; expected a map in [0, 1].")
        if low < 0 or high > 1:
            raise ScoreMapError(f"{where}: values in [{low:g}, {high:g}]; expected [0, 1] "
                                "(min-max normalise each map first).")
        if value.shape != (self.size, self.size):
            value = _resize_like_the_reference(value.astype(np.float64), self.size)
        if out is None:
            return value.astype(np.float64)
        out[...] = value
        return out


def _resize_like_the_reference(score_map: np.ndarray, size: int) -> np.ndarray:
    """OpenCV bicubic to ``size x size``, then min-max normalisation (constant: zeros)."""
    import cv2

    resized = cv2.resize(score_map, (size, size), interpolation=cv2.INTER_CUBIC)
    low, high = resized.min(), resized.max()
    if not high > low:
        return np.zeros_like(resized)
    resized = resized - low
    return resized / resized.max()


def read_predictions(path: str | os.PathLike, image_ids: Sequence[str]) -> dict[str, list[int]]:
    """Predicted classes, best first: ``<image id>,<class>[,<class> ...]`` per line (one class
    gives top-1; five or more give top-5 as well).

    Raises:
        ScoreMapError: a malformed line, an unknown image id, or an image without a line.
    """
    path = Path(path)
    known, predictions = set(image_ids), {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            parts = line.strip().split(",")
            if parts == [""]:
                continue
            try:
                classes = [int(v) for v in parts[1:]]
            except ValueError:
                classes = []
            if not classes:
                raise ScoreMapError(f"{path}:{number}: {line.strip()!r}; expected "
                                    "'<image id>,<class>[,<class> ...]', best first.")
            if parts[0] not in known:
                raise ScoreMapError(f"{path}:{number}: image id {parts[0]!r} is not in the "
                                    "ground truth.")
            predictions[parts[0]] = classes
    missing = [i for i in image_ids if i not in predictions]
    if missing:
        raise ScoreMapError(f"{path}: no prediction for {len(missing)} image(s), e.g. "
                            f"{missing[0]!r}.")
    return predictions


def _mask_of(truth: Metadata, image_id: str, mask_root: Path | None, size: int):
    """``(foreground, ignore)`` bool masks at ``size x size`` as the reference makes them."""
    import cv2

    if truth.masks is not None:
        loaded = truth.masks[image_id]()
        pair = loaded if isinstance(loaded, tuple) else (loaded, np.zeros_like(loaded))
        fg, ignore = (cv2.resize(np.float32(m), (size, size),
                                 interpolation=cv2.INTER_NEAREST) > 0.5 for m in pair)
        return fg, ignore & ~fg
    if mask_root is None:
        raise ScoreMapError(f"{truth.source}: the ground truth gives masks by path; pass the "
                            "mask root (--mask-root) they are relative to.")
    paths, ignore_path = truth.mask_paths[image_id]

    def read(relative: str) -> np.ndarray:
        # Nearest-neighbour resizing picks pixels, so thresholding first (> 0, the reference's
        # > 0.5 on 0..255) gives the reference's resize-then-threshold exactly.
        mask = load_instance_mask(str(mask_root / relative))
        return cv2.resize(mask.astype(np.uint8), (size, size),
                          interpolation=cv2.INTER_NEAREST) > 0

    fg = np.stack([read(p) for p in paths]).any(axis=0)
    ignore = read(ignore_path) & ~fg if ignore_path else np.zeros_like(fg)
    return fg, ignore


def _batches(ids: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def evaluate_score_maps(maps: ScoreMaps, truth: Metadata, *, interval: float = 0.001,
                        iou_thresholds: Sequence[int] = (30, 50, 70),
                        cam_threshold: float | None = None,
                        predictions: Mapping[str, Sequence[int]] | None = None,
                        mask_root: str | os.PathLike | None = None,
                        progress: bool = True, batch_size: int = 128) -> dict:
    """Every metric of ``maps`` against ``truth`` (see the module docstring).

    Args:
        maps: the score maps.
        truth: the split's ground truth (:func:`~wsolkit.data.metadata.read_metadata` or
            :func:`~wsolkit.data.metadata.metadata_from_dataset`).
        interval: the threshold step: ``np.arange(0, 1, interval)`` (the reference's
            ``cam_curve_interval``, 0.001 by default: 1,000 thresholds).
        iou_thresholds: in percent, as the reference takes them.
        cam_threshold: also report GT-known (and top-1 / top-5) localization at this threshold
            (it must be on the grid).
        predictions: ``{image id: classes, best first}`` for top-1 / top-5
            (:func:`read_predictions`).
        mask_root: the folder the ground truth's mask paths are relative to.
        progress: a progress bar on the terminal.

    Raises:
        ScoreMapError: see :class:`ScoreMaps`; also a map for an image the ground truth does
            not know, or a ``cam_threshold`` off the grid.
    """
    from wsolkit.boxes import best_iou_per_mode, binarize_thresholds, rescale_boxes
    from wsolkit.metrics import LocalizationEvaluator

    ids = list(truth.image_ids)
    unknown = sorted(maps.image_ids() - set(ids))
    if unknown:
        raise ScoreMapError(f"{maps.where(unknown[0])}: a map for {len(unknown)} image id(s) "
                            f"that {truth.source} does not list, e.g. {unknown[0]!r}; evaluate "
                            "against the split the maps were made for.")
    thresholds = binarize_thresholds(interval)
    column = None
    if cam_threshold is not None:
        hit = np.flatnonzero(np.isclose(thresholds, cam_threshold, rtol=0, atol=1e-9))
        if hit.size == 0:
            raise ScoreMapError(f"cam_threshold = {cam_threshold}: not on the grid "
                                f"np.arange(0, 1, {interval}).")
        column = int(hit[0])
    deltas = [d / 100 for d in iou_thresholds]
    size = maps.size
    with_boxes = truth.boxes is not None
    pxap = (LocalizationEvaluator(thresholds=thresholds, pxap_bins=thresholds)
            if truth.has_masks else None)
    mask_root = mask_root if mask_root is not None else truth.mask_root
    root = Path(mask_root) if mask_root is not None else None
    ious = {"largest": [], "all": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ids), desc="score maps", unit="map", dynamic_ncols=True)
    try:
        for chunk in _batches(ids, batch_size):
            stack = np.empty((len(chunk), size, size), dtype=np.float64)
            for j, image_id in enumerate(chunk):
                maps.load(image_id, out=stack[j])
            if with_boxes:
                gt = [rescale_boxes(truth.boxes[i], from_size=truth.sizes[i].hw,
                                    to_size=(size, size)) for i in chunk]
                for mode, iou in best_iou_per_mode(stack, gt, thresholds, tuple(ious)).items():
                    ious[mode].append(iou)
            if pxap is not None:
                fg, ignore = zip(*(_mask_of(truth, i, root, size) for i in chunk))
                pxap.accumulate(stack, None, masks=np.stack(fg), ignore=np.stack(ignore))
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    n = len(ids)
    out: dict = {"num_images": n, "thresholds": thresholds.tolist(), "interval": interval,
                 "iou_thresholds": list(iou_thresholds), "size": size, "source": truth.source}
    if with_boxes:
        top1 = top5 = None
        if predictions is not None:
            ranked = [list(predictions[i]) for i in ids]
            labels = [truth.labels[i] for i in ids]
            top1 = np.array([r[0] == y for r, y in zip(ranked, labels)])
            top5 = (np.array([y in r[:5] for r, y in zip(ranked, labels)])
                    if all(len(r) >= 5 for r in ranked) else None)
        for mode, parts in ious.items():
            iou = np.concatenate(parts)
            curves = {str(d): ((iou >= delta).sum(0) * 100.0 / float(n))
                      for d, delta in zip(iou_thresholds, deltas)}
            out[mode] = {
                "max_box_acc": {d: float(c.max()) for d, c in curves.items()},
                "best_threshold": {d: float(thresholds[int(np.argmax(c))])
                                   for d, c in curves.items()},
                "box_acc_curves": {d: c.tolist() for d, c in curves.items()}}
            if mode == "largest":
                known = iou >= 0.5
                out["gt_known_loc"] = _localization(known, None, thresholds, column)
                if top1 is not None:
                    out["top1_loc"] = _localization(known, top1, thresholds, column)
                    out["top1_cls"] = float(top1.sum() * 100.0 / float(n))
                if top5 is not None:
                    out["top5_loc"] = _localization(known, top5, thresholds, column)
                    out["top5_cls"] = float(top5.sum() * 100.0 / float(n))
        if "50" in out["largest"]["max_box_acc"]:
            out["max_box_acc"] = out["largest"]["max_box_acc"]["50"]
        out["max_box_acc_v2"] = float(np.average(list(out["all"]["max_box_acc"].values())))
    if pxap is not None:
        result = pxap.compute()
        out["pxap"] = float(result["pxap"])
        out["pxap_curve"] = {"thresholds": np.asarray(result["pxap_thresholds"]).tolist(),
                             "precision": np.asarray(result["pxap_precision"]).tolist(),
                             "recall": np.asarray(result["pxap_recall"]).tolist()}
    return out


def _localization(correct: np.ndarray, classified: np.ndarray | None, thresholds: np.ndarray,
                  column: int | None) -> dict:
    """Localization accuracy (box at IoU >= 0.5, and the class where given) over thresholds."""
    hits = correct if classified is None else correct & classified[:, None]
    curve = hits.sum(0) * 100.0 / float(hits.shape[0])
    best = int(np.argmax(curve))
    result = {"best": float(curve[best]), "best_threshold": float(thresholds[best]),
              "curve": curve.tolist()}
    if column is not None:
        result["at_threshold"] = float(curve[column])
        result["threshold"] = float(thresholds[column])
    return result


def format_results(results: Mapping) -> str:
    """The headline numbers as a readable table (the JSON has the curves)."""
    rows = [("images", f"{results['num_images']}"),
            ("thresholds", f"{len(results['thresholds'])} (interval {results['interval']})")]
    if "largest" in results:
        for mode in ("largest", "all"):
            for d, value in results[mode]["max_box_acc"].items():
                rows.append((f"MaxBoxAcc {mode} contour, IoU {d}%",
                             f"{value:.2f} at threshold {results[mode]['best_threshold'][d]:g}"))
        rows.append(("MaxBoxAccV2 (all contours, mean over IoUs)",
                     f"{results['max_box_acc_v2']:.2f}"))
        for key, label in (("gt_known_loc", "GT-known loc"), ("top1_loc", "top-1 loc"),
                           ("top5_loc", "top-5 loc")):
            if key in results:
                entry = results[key]
                text = f"{entry['best']:.2f} at best threshold {entry['best_threshold']:g}"
                if "at_threshold" in entry:
                    text += f"; {entry['at_threshold']:.2f} at {entry['threshold']:g}"
                rows.append((label, text))
        for key, label in (("top1_cls", "top-1 cls"), ("top5_cls", "top-5 cls")):
            if key in results:
                rows.append((label, f"{results[key]:.2f}"))
    if "pxap" in results:
        rows.append(("PxAP", f"{results['pxap']:.2f}"))
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)
