"""From cached evaluations to the numbers a chapter reports: table rows, per-image values per
seed for the bootstrap, the threshold chosen on held-out images, conventions compared.

The inputs are the dicts :func:`wsolkit.evaluation.cached_evaluation` returns (one per model and
split); nothing here runs a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .localization import EvaluationError

__all__ = ["compare_conventions", "correct_at_validation_choice", "localization_summary",
           "per_image_percent", "threshold_index", "validation_choice"]


def threshold_index(thresholds, value: float) -> int:
    """The index of the threshold nearest ``value`` in a threshold grid.

    Raises:
        EvaluationError: ``value`` lies more than half a grid step away from every threshold
            (the grid does not hold it).
    """
    thresholds = np.asarray(thresholds, dtype=float)
    index = int(np.argmin(np.abs(thresholds - value)))
    step = float(np.min(np.diff(thresholds))) if thresholds.size > 1 else 0.0
    if abs(thresholds[index] - value) > step / 2 + 1e-9:
        raise EvaluationError(f"threshold {value} is not on the grid {thresholds[0]:g}..."
                              f"{thresholds[-1]:g} (step {step:g}).")
    return index


def validation_choice(val: Mapping) -> int:
    """The index of the threshold with the best GT-known localization on the validation split
    (the first of equal ones): the threshold the test split is then scored at."""
    return int(np.argmax(np.asarray(val["loc_curve"])))


def localization_summary(val: Mapping, test: Mapping) -> dict[str, float]:
    """One model's row of a localization table (percent): classification, localization at the
    threshold 0.2 and at the validation-chosen threshold, the threshold-free MaxBoxAccV2 and
    PxAP, and how often the map's maximum falls in the part box (NaN where the data has none).

    Args:
        val: the validation split's cached evaluation (its curve chooses the threshold).
        test: the test split's.
    """
    best = validation_choice(val)
    thresholds = np.asarray(test["thresholds"])
    return {
        "top-1 cls": float(test["top1_cls"]), "top-1 loc": float(test["top1_loc"]),
        "GT-known @0.2": float(test["gt_known_loc"]),
        "val-chosen threshold": float(thresholds[best]),
        "GT-known @val-chosen": float(np.asarray(test["loc_curve"])[best]),
        "MaxBoxAccV2": float(test["max_box_acc_v2"]), "PxAP": float(test.get("pxap", np.nan)),
        "CAM max in part (%)": float(test.get("part_hit_rate", np.nan)),
    }


def per_image_percent(results: Sequence[Mapping], key: str, column: int | None = None
                      ) -> list[np.ndarray]:
    """One array per seed of per-image values in percent (``0``/``100`` for correctness), the
    input of :func:`wsolkit.reporting.paired_bootstrap`.

    Args:
        results: the cached evaluations, one per seed.
        key: a per-image entry (``per_image_correct`` (N, T), ``per_image_top1``,
            ``per_image_part_hit``).
        column: for a per-threshold entry, the threshold's index (:func:`threshold_index`).

    Raises:
        EvaluationError: an entry the evaluation did not keep (the message lists those it did),
            or a column for a per-image vector.
    """
    out = []
    for s, result in enumerate(results):
        if key not in result:
            kept = sorted(k for k in result if k.startswith("per_image"))
            raise EvaluationError(f"per_image_percent: seed {s}'s evaluation has no {key!r}; it "
                                  f"kept {kept}.")
        values = np.asarray(result[key], dtype=float)
        if column is not None:
            if values.ndim != 2:
                raise EvaluationError(f"per_image_percent: {key!r} has shape {values.shape}; a "
                                      "column needs one value per image and threshold.")
            values = values[:, column]
        out.append(100 * values)
    return out


def correct_at_validation_choice(vals: Sequence[Mapping], tests: Sequence[Mapping]
                                 ) -> list[np.ndarray]:
    """Per seed, each test image's correctness (percent) at that model's own validation-chosen
    threshold (:func:`validation_choice`)."""
    if len(vals) != len(tests):
        raise EvaluationError(f"correct_at_validation_choice: {len(vals)} validation and "
                              f"{len(tests)} test evaluations; expected one of each per seed.")
    return [per_image_percent([test], "per_image_correct", validation_choice(val))[0]
            for val, test in zip(vals, tests)]


def compare_conventions(maps, gt_boxes, conventions: Sequence[str] = ("reference", "pixel"),
                        cam_threshold: float = 0.2) -> dict[str, dict[str, float]]:
    """The box metrics of the same score maps under each box convention (reference: 8-bit
    maps, contour areas, inclusive boxes; pixel: float maps, pixel counts, exclusive boxes).

    Returns:
        ``{convention: {"GT-known @0.2", "MaxBoxAcc", "MaxBoxAccV2"}}`` in percent.
    """
    from wsolkit.metrics import LocalizationEvaluator

    maps = maps.float().numpy() if hasattr(maps, "float") else np.asarray(maps, dtype=np.float32)
    out = {}
    for convention in conventions:
        evaluator = LocalizationEvaluator(convention=convention, cam_threshold=cam_threshold)
        evaluator.accumulate(maps, gt_boxes)
        result = evaluator.compute()
        out[convention] = {"GT-known @0.2": result["gt_known_loc"],
                           "MaxBoxAcc": result["max_box_acc"],
                           "MaxBoxAccV2": result["max_box_acc_v2"]}
    return out
