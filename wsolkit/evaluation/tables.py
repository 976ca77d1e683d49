"""Score tables and paired comparisons from a chapter's cached evaluations, one call per row.

A chapter scores several models (methods, each with several seeds) and several score maps of
each, under several threshold rules. A table row, or one side of a comparison, is an *arm*
``(method, map name, rule)``; the rule says how each image's threshold is chosen:

* ``"fixed"``: the fixed threshold of the evaluation (its ``cam_threshold``, 0.2 of the maximum,
  Zhou et al. 2016);
* ``"val"``: one threshold for the whole split, the one with the best GT-known loc on the
  validation split (Choe et al., CVPR 2020);
* ``"at:<t>"`` (``"at:0.6"``): one given threshold for every image, any of the evaluation's
  grid (a paper's own threshold, a threshold sweep);
* the name of a per-image threshold chooser given to
  :func:`~wsolkit.evaluation.cache.cached_image_threshold_evaluation` (for instance
  :data:`wsolkit.methods.improving_cam.RULES`).

:class:`MapEvaluations` holds the cached evaluations of one map of one model
(:func:`evaluate_map`); a chapter keeps them per dataset in a dict
``{(method, seed, map name): MapEvaluations}``, which every function here reads. The seeds of an
arm are the seeds present in that dict.

Per-image values are in percent (0 or 100), so that their means are the table's accuracies and
a difference of two arms is in points. Comparisons resample the test images within each seed,
paired by image between the arms, and average over the seeds
(:func:`wsolkit.reporting.paired_bootstrap`); MaxBoxAccV2, a maximum over thresholds of a mean
over images, is resampled whole (:func:`wsolkit.reporting.bootstrap_statistic`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from wsolkit.reporting import bootstrap_statistic, claim_row, paired_bootstrap, seed_summary
from wsolkit.train.config import TrainConfig

from .cache import cached_evaluation, cached_image_threshold_evaluation
from .localization import LocalizationSet, ThresholdFn

__all__ = ["COLUMNS", "PER_IMAGE_METRICS", "Arm", "MapEvaluations", "TableError", "arm_mean",
           "chosen_thresholds", "claim", "compare", "evaluate_map", "max_box_acc_v2",
           "mean_curve", "per_image", "per_seed_scores", "row_scores", "rule_text",
           "rule_thresholds", "score_table", "seeds_of"]

#: Metrics that are means of per-image values (0 or 100 per image).
PER_IMAGE_METRICS = ("top-1 cls", "GT-known loc", "top-1 loc")
#: The columns of :func:`row_scores`, in order.
COLUMNS = ("top-1 cls", "top-1 loc", "GT-known loc", "MaxBoxAccV2", "PxAP", "threshold",
           "fallbacks", "top-1 cls err", "top-1 loc err", "GT-known loc err")
#: An arm: ``(method, map name, rule)``.
Arm = tuple[str, str, str]
_LOC_IOU = 0.5


class TableError(ValueError):
    """An arm, a rule or a metric does not match the evaluations given."""


@dataclass
class MapEvaluations:
    """The cached evaluations of one score map of one model on the reported split.

    Attributes:
        fixed: :func:`~wsolkit.evaluation.cache.cached_evaluation`'s result, with its per-image
            arrays ``per_image_correct`` ``(N, T)``, ``per_image_iou_all`` ``(N, T)`` and
            ``per_image_top1`` ``(N,)``.
        automatic: :func:`~wsolkit.evaluation.cache.cached_image_threshold_evaluation`'s result,
            or ``None`` (no per-image rule).
        val_threshold: the threshold chosen on the validation split, or ``None`` (no such split).
    """

    fixed: Mapping[str, Any]
    automatic: Mapping[str, Any] | None = None
    val_threshold: float | None = None


def evaluate_map(run_dir: str | os.PathLike, split: str,
                 model_loader: Callable[[], torch.nn.Module], data: LocalizationSet,
                 config: TrainConfig, *, map_name: str = "cam",
                 choosers: Mapping[str, ThresholdFn] | None = None,
                 val_data: LocalizationSet | None = None) -> MapEvaluations:
    """Every evaluation of one map of one model, each cached in its run directory.

    Args:
        run_dir, split, model_loader, data, config, map_name: as
            :func:`~wsolkit.evaluation.cache.cached_evaluation`.
        choosers: per-image threshold rules (``None``: none).
        val_data: a validation split to choose one threshold on (the best GT-known loc over the
            evaluation's thresholds; the first of equal ones), or ``None``.
    """
    fixed = cached_evaluation(run_dir, split, model_loader, data, config, map_name=map_name)
    automatic = (cached_image_threshold_evaluation(run_dir, split, model_loader, data, config,
                                                   choosers, map_name=map_name)
                 if choosers else None)
    val_threshold = None
    if val_data is not None:
        val = cached_evaluation(run_dir, "val", model_loader, val_data, config,
                                map_name=map_name)
        val_threshold = float(val["thresholds"][int(np.argmax(val["loc_curve"]))])
    return MapEvaluations(fixed, automatic, val_threshold)


# --------------------------------------------------------------------------------------------
# One model, one map, one rule
# --------------------------------------------------------------------------------------------


def _column(evaluation: MapEvaluations, threshold: float, rule: str) -> int:
    grid = np.asarray(evaluation.fixed["thresholds"], dtype=np.float64)
    hit = np.flatnonzero(np.isclose(grid, threshold, rtol=0, atol=1e-9))
    if hit.size == 0:
        raise TableError(f"rule {rule!r}: the threshold {threshold} is not among the "
                         f"evaluation's {grid.size} thresholds ({grid[0]} ... {grid[-1]}), "
                         "so its per-image correctness was not kept.")
    return int(hit[0])


def _chooser(evaluation: MapEvaluations, rule: str) -> Mapping[str, Any]:
    known = [] if evaluation.automatic is None else list(evaluation.automatic["choosers"])
    if rule not in known:
        raise TableError(f"rule {rule!r}: expected 'fixed', 'val', 'at:<t>' or one of the "
                         f"per-image choosers evaluated, {known}.")
    return evaluation.automatic["choosers"][rule]


def _val_threshold(evaluation: MapEvaluations) -> float:
    if evaluation.val_threshold is None:
        raise TableError("rule 'val': this evaluation has no validation-chosen threshold "
                         "(evaluate_map(..., val_data=...) chooses one).")
    return evaluation.val_threshold


def _split_threshold(evaluation: MapEvaluations, rule: str) -> float | None:
    """The one threshold of a rule that gives every image the same, else ``None``."""
    if rule == "fixed":
        return float(evaluation.fixed["cam_threshold"])
    if rule == "val":
        return _val_threshold(evaluation)
    if isinstance(rule, str) and rule.startswith("at:"):
        try:
            return float(rule[3:])
        except ValueError:
            raise TableError(f"rule {rule!r}: expected 'at:' and a threshold, e.g. "
                             "'at:0.6'.") from None
    return None


def rule_thresholds(evaluation: MapEvaluations, rule: str) -> np.ndarray:
    """``(N,)`` float64: the threshold each image was scored at under ``rule``."""
    n = len(evaluation.fixed["per_image_correct"])
    threshold = _split_threshold(evaluation, rule)
    if threshold is not None:
        return np.full(n, threshold)
    return np.asarray(_chooser(evaluation, rule)["thresholds"], dtype=np.float64)


def per_image(evaluation: MapEvaluations, rule: str, metric: str) -> np.ndarray:
    """Each image's score under ``rule``: 100 where it is right, 0 where it is not.

    Args:
        evaluation: one model's map.
        rule: ``"fixed"``, ``"val"``, ``"at:<t>"`` or a chooser's name.
        metric: one of :data:`PER_IMAGE_METRICS`: ``"top-1 cls"`` (the class, whatever the
            rule), ``"GT-known loc"`` (the box of the true class's map, IoU >= 0.5) or
            ``"top-1 loc"`` (both).

    Returns:
        ``(N,)`` float64 in ``{0, 100}``; its mean is the metric in percent.
    """
    if metric not in PER_IMAGE_METRICS:
        raise TableError(f"metric {metric!r}: expected one of {PER_IMAGE_METRICS}.")
    if metric == "top-1 cls":
        return 100.0 * _top1(evaluation)
    threshold = _split_threshold(evaluation, rule)
    if threshold is not None:
        correct = np.asarray(evaluation.fixed["per_image_correct"], dtype=bool)[
            :, _column(evaluation, threshold, rule)]
    else:
        correct = np.asarray(_chooser(evaluation, rule)["ious"], dtype=np.float64) >= _LOC_IOU
    if metric == "top-1 loc":
        correct = correct & _top1(evaluation)
    return 100.0 * correct


def _top1(evaluation: MapEvaluations) -> np.ndarray:
    # Read only where a metric needs it: maps that come with no classifier (a reference
    # baseline's) still have GT-known loc.
    if "per_image_top1" not in evaluation.fixed:
        raise TableError("this evaluation has no per-image classification (maps without a "
                         "classifier); only 'GT-known loc' and 'MaxBoxAccV2' apply.")
    return np.asarray(evaluation.fixed["per_image_top1"], dtype=bool)


def max_box_acc_v2(iou_all, iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
                   counts=None) -> float:
    """MaxBoxAccV2 (Choe et al., CVPR 2020) from per-image IoUs, optionally of a resample.

    Args:
        iou_all: ``(N, T)`` the best IoU of each image's all-component boxes at each threshold
            (``per_image_iou_all``).
        iou_thresholds: the IoUs averaged over.
        counts: ``(N,)`` how often each image is drawn (a bootstrap resample); ``None``: once.

    Returns:
        In percent: the mean over ``iou_thresholds`` of the best accuracy over the thresholds.
    """
    iou = np.asarray(iou_all, dtype=np.float64)
    if iou.ndim != 2 or iou.shape[0] == 0:
        raise TableError(f"max_box_acc_v2: per-image IoUs of shape {iou.shape}; expected (N, T).")
    weights = np.ones(iou.shape[0]) if counts is None else np.asarray(counts, dtype=np.float64)
    hits = np.stack([iou >= d for d in iou_thresholds], axis=1)  # (N, D, T)
    curves = np.tensordot(weights, hits, axes=1) * 100.0 / weights.sum()
    return float(curves.max(axis=1).mean())


def row_scores(evaluation: MapEvaluations, rule: str) -> dict[str, float]:
    """One model's map under one rule: the columns :data:`COLUMNS` (percent; ``... err`` is
    100 minus the accuracy).

    ``threshold`` is the mean threshold used, ``fallbacks`` the number of images a per-image
    rule left undecided (scored at the fallback, 0.2); MaxBoxAccV2 and PxAP do not depend on
    the rule (PxAP is NaN without masks).
    """
    fixed = evaluation.fixed
    scores = {metric: float(per_image(evaluation, rule, metric).mean())
              for metric in PER_IMAGE_METRICS}
    scores["MaxBoxAccV2"] = float(fixed["max_box_acc_v2"])
    scores["PxAP"] = float(fixed.get("pxap", np.nan))
    scores["threshold"] = float(rule_thresholds(evaluation, rule).mean())
    scores["fallbacks"] = (0 if _split_threshold(evaluation, rule) is not None
                           else int(_chooser(evaluation, rule)["undecided"]))
    for metric in PER_IMAGE_METRICS:  # the error rates papers print: 100 - accuracy
        scores[f"{metric} err"] = 100.0 - scores[metric]
    return {column: scores[column] for column in COLUMNS}


# --------------------------------------------------------------------------------------------
# Arms: one method's seeds
# --------------------------------------------------------------------------------------------


def seeds_of(evals: Mapping[tuple, MapEvaluations], method: str, map_name: str) -> list:
    """The seeds evaluated for ``method`` and ``map_name``, in increasing order.

    Raises:
        TableError: none.
    """
    seeds = sorted(seed for m, seed, name in evals if m == method and name == map_name)
    if not seeds:
        have = sorted({(m, name) for m, _, name in evals})
        raise TableError(f"no evaluation of the map {map_name!r} of {method!r}; evaluated: "
                         f"{have}.")
    return seeds


def per_seed_scores(evals: Mapping[tuple, MapEvaluations], rows: Mapping[str, Arm]):
    """:func:`row_scores` of every seed of every row: a ``DataFrame`` indexed by
    ``("row", "seed")`` with the columns :data:`COLUMNS`."""
    import pandas as pd

    records = []
    for label, (method, map_name, rule) in rows.items():
        for seed in seeds_of(evals, method, map_name):
            records.append({"row": label, "seed": seed,
                            **row_scores(evals[method, seed, map_name], rule)})
    if not records:
        raise TableError("per_seed_scores: no row given.")
    return pd.DataFrame(records).set_index(["row", "seed"])


def score_table(evals: Mapping[tuple, MapEvaluations], rows: Mapping[str, Arm],
                columns: Sequence[str] = COLUMNS[:4], digits: int = 1):
    """A table of arms: one row per ``{label: (method, map, rule)}``, each cell "mean
    (min-max)" over the seeds (:func:`wsolkit.reporting.seed_summary`); ``threshold`` is the
    mean over seeds, ``fallbacks`` the total."""
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise TableError(f"score_table: columns {unknown}; expected some of {COLUMNS}.")
    formats = {"threshold": lambda v: f"{v.mean():.2f}", "fallbacks": lambda v: f"{int(v.sum())}"}
    return seed_summary(per_seed_scores(evals, rows)[list(columns)], by="row", digits=digits,
                        formats=formats)


def arm_mean(evals: Mapping[tuple, MapEvaluations], arm: Arm, metric: str) -> float:
    """The mean over seeds of one column of :func:`row_scores` for an arm."""
    return float(per_seed_scores(evals, {"arm": arm})[metric].mean())


def mean_curve(evals: Mapping[tuple, MapEvaluations], method: str,
               map_name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds (T,), GT-known loc (T,))``: the fixed-threshold curve, mean over seeds."""
    fixed = [evals[method, s, map_name].fixed for s in seeds_of(evals, method, map_name)]
    return (np.asarray(fixed[0]["thresholds"]),
            np.mean([np.asarray(f["loc_curve"]) for f in fixed], axis=0))


def chosen_thresholds(evals: Mapping[tuple, MapEvaluations], method: str, map_name: str,
                      rules: Sequence[str]):
    """The threshold every test image got from each rule, every seed: a long ``DataFrame``
    with the columns ``seed``, ``rule`` and ``threshold`` (an image a per-image rule left
    undecided has the fallback's)."""
    import pandas as pd

    frames = []
    for seed in seeds_of(evals, method, map_name):
        evaluation = evals[method, seed, map_name]
        for rule in rules:
            thresholds = rule_thresholds(evaluation, rule)
            frames.append(pd.DataFrame({"seed": seed, "rule": rule, "threshold": thresholds}))
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------
# Comparisons and claims
# --------------------------------------------------------------------------------------------


def _v2_hits(evaluation: MapEvaluations, iou_thresholds: Sequence[float]) -> np.ndarray:
    iou = np.asarray(evaluation.fixed["per_image_iou_all"], dtype=np.float64)
    hits = np.stack([iou >= d for d in iou_thresholds], axis=1)
    return hits.reshape(iou.shape[0], -1).astype(np.float64)


def compare(evals: Mapping[tuple, MapEvaluations], first: Arm, second: Arm | None, metric: str,
            *, replicates: int | None = None, seed: int = 0,
            iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7)) -> tuple[float, float, float]:
    """The difference ``first - second`` of a metric (or ``first`` alone), in points, with a
    95% interval over the test images of every seed.

    For a per-image metric, :func:`wsolkit.reporting.paired_bootstrap` of the per-image values;
    for ``"MaxBoxAccV2"`` (whatever the rule: it takes the best threshold itself),
    :func:`wsolkit.reporting.bootstrap_statistic`, the maximum over thresholds taken inside every
    replicate, both arms on the same resampled images.

    Args:
        evals: ``{(method, seed, map name): MapEvaluations}``.
        first, second: arms ``(method, map name, rule)``; ``second`` ``None`` for one arm. Both
            need the same seeds (seed ``s`` of one is paired with seed ``s`` of the other).
        metric: one of :data:`PER_IMAGE_METRICS` or ``"MaxBoxAccV2"``.
        replicates: bootstrap replicates (default: the reporting function's).
        seed: the resampling's random seed.

    Returns:
        ``(estimate, low, high)``; the estimate is the mean over seeds of the per-seed values.
    """
    seeds = seeds_of(evals, first[0], first[1])
    if second is not None and seeds_of(evals, second[0], second[1]) != seeds:
        raise TableError(f"compare: {first} has the seeds {seeds} and {second} has "
                         f"{seeds_of(evals, second[0], second[1])}; a paired comparison needs "
                         "the same seeds.")
    arms = [first] if second is None else [first, second]
    options = {} if replicates is None else {"replicates": replicates}
    if metric in PER_IMAGE_METRICS:
        values = [[per_image(evals[m, s, name], rule, metric) for s in seeds]
                  for m, name, rule in arms]
        return paired_bootstrap(*values, seed=seed, **options)
    if metric != "MaxBoxAccV2":
        raise TableError(f"compare: metric {metric!r}; expected one of "
                         f"{PER_IMAGE_METRICS + ('MaxBoxAccV2',)}.")
    hits = [[_v2_hits(evals[m, s, name], iou_thresholds) for s in seeds] for m, name, _ in arms]
    shape = (len(iou_thresholds), -1)

    def v2(arm: int, s: int, counts: np.ndarray) -> float:
        curves = (counts @ hits[arm][s]).reshape(shape) * 100.0 / counts.sum()
        return float(curves.max(axis=1).mean())

    def statistic(s: int, indices: np.ndarray) -> float:
        counts = np.bincount(indices, minlength=hits[0][s].shape[0]).astype(np.float64)
        return v2(0, s, counts) - (v2(1, s, counts) if second is not None else 0.0)

    for arm in range(len(arms)):
        for s in range(len(seeds)):
            if hits[arm][s].shape[0] != hits[0][s].shape[0]:
                raise TableError(f"compare: seed {seeds[s]} has {hits[arm][s].shape[0]} and "
                                 f"{hits[0][s].shape[0]} images in the two arms.")
    return bootstrap_statistic([np.arange(h.shape[0]) for h in hits[0]], statistic, seed=seed,
                               **options)


def _bound(value: float, signed: bool) -> str:
    if value == 0:
        return "0"
    return f"{value:+g}" if signed else f"{value:g}"


def rule_text(metric: str, threshold: float, direction: str, *, paired: bool = True) -> str:
    """The rule of a claim as the claims table states it: ``"Δ GT-known loc > 0"``,
    ``"|Δ top-1 cls| <= 2 points"``, ``"top-1 cls >= 90%"``."""
    subject = f"Δ {metric}" if paired else metric
    unit = " points" if paired else "%"
    if direction == "within":
        return f"|{subject}| <= {_bound(threshold, False)}{unit}"
    bound = _bound(threshold, paired)
    return f"{subject} {direction} {bound}" + ("" if bound == "0" else unit)


def claim(evals: Mapping[tuple, MapEvaluations], text: str, first: Arm, second: Arm | None,
          metric: str, threshold: float = 0.0, direction: str = ">", *, replicates=None,
          **extra) -> dict:
    """One row of a claims table (:func:`wsolkit.reporting.claim_row`) comparing two arms.

    Args:
        evals, first, second, metric, replicates: as :func:`compare`.
        text: the claim in words.
        threshold, direction: the rule: ``">"`` (strictly more than ``threshold``: holds when
            the whole interval lies above it, fails when none of it does), ``">="``, ``"<="``
            or ``"within"`` (``|Δ| <= threshold``).
        **extra: further columns (the dataset, the paper's number).

    Returns:
        The row, its rule stated by :func:`rule_text`.
    """
    estimate, low, high = compare(evals, first, second, metric, replicates=replicates)
    rule = rule_text(metric, threshold, direction, paired=second is not None)
    if direction == ">":
        # "More than t": the smallest number above t as an "at least" bound.
        threshold, direction = float(np.nextafter(threshold, np.inf)), ">="
    return claim_row(text, rule, estimate, low, high, threshold, direction,
                     signed=second is not None, unit="" if second is not None else "%",
                     **extra)
