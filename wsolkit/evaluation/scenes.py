"""Several objects per scene, scored with an interval over the test scenes.

COCO's average precision is not a mean of per-image values: every detection of a class, from
every image, is ranked by its score before precision and recall are counted. A bootstrap over
test scenes therefore cannot average per-scene numbers; it has to recount. This module runs
pycocotools' matching once and recounts cheaply:

* :func:`match_detections` keeps what ``COCOeval.evaluate`` decides for every detection (its
  scene, its score, true or false positive at each IoU threshold) and, for every scene, how many
  ground-truth objects of each category it holds.
* :func:`detection_metrics` redoes ``COCOeval.accumulate`` from those flags with every scene
  weighted. With weights of one it gives COCOeval's numbers exactly (101-point interpolated
  precision, mAP, recall); with the counts of a bootstrap draw it gives that replicate's numbers:
  a scene drawn twice adds its detections, and its objects, twice.
* :func:`bootstrap_weights` draws the scenes: one array per seed of ``(1 + R, n)`` counts, the
  first row all ones (the full sample), in the order :func:`wsolkit.reporting.bootstrap_statistic`
  draws its indices, so that :func:`seed_interval` gives the interval that function would give,
  but for all replicates at once. Both methods of a comparison take the same weights: the
  comparison is paired by scene.
* :func:`pair_counts` and :func:`weighted_auc`: the area under the ROC curve of per-cell scores
  (object against background cells), with the same scene weights, from one ``(n, n)`` table of
  correctly ordered (object, background) pairs between every two scenes.

The scene figures of the chapter on dense class maps (colour-coded class maps with their boxes)
are at the end: :func:`class_palette`, :func:`short_class_name`, :func:`draw_class_boxes`,
:func:`show_class_map`, :func:`class_map_grid`, :func:`cell_score_figure`,
:func:`plot_cell_histogram`, :func:`plot_precision_recall`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .localization import EvaluationError

__all__ = [
    "COMPARISONS",
    "DetectionMatches",
    "MATCH_ARRAYS",
    "RECALL_GRID",
    "bootstrap_weights",
    "compare_per_seed",
    "format_interval",
    "cell_score_figure",
    "class_map_grid",
    "class_palette",
    "detection_metrics",
    "draw_class_boxes",
    "match_detections",
    "pair_counts",
    "plot_cell_histogram",
    "plot_precision_recall",
    "ratio",
    "relative_gain",
    "seed_interval",
    "short_class_name",
    "show_class_map",
    "weighted_auc",
    "weighted_share",
]

#: COCOeval's recall points 0.00, 0.01, ..., 1.00 (``Params.recThrs``, the same expression).
RECALL_GRID = np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)


@dataclass(frozen=True)
class DetectionMatches:
    """COCOeval's decision on every detection, in the order its ``accumulate`` ranks them.

    Detections are grouped by category (in ``category_ids`` order) and, within a category,
    sorted by score, highest first (a stable sort over COCOeval's image order, so ties fall as
    in COCOeval).

    Attributes:
        iou_thresholds: ``(T,)`` float64.
        category_ids: ``(K,)`` int64 COCO category ids.
        category: ``(D,)`` int64 index into ``category_ids``.
        scene: ``(D,)`` int64 index of the detection's scene in the ``image_ids`` given to
            :func:`match_detections`.
        score: ``(D,)`` float64.
        tp: ``(T, D)`` bool, matched to a ground-truth object that is not ignored.
        fp: ``(T, D)`` bool, unmatched and not ignored (a detection can be neither).
        gt_counts: ``(K, S)`` int64 ground-truth objects that are not ignored, per category and
            scene.
    """

    iou_thresholds: np.ndarray
    category_ids: np.ndarray
    category: np.ndarray
    scene: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    gt_counts: np.ndarray

    @property
    def num_scenes(self) -> int:
        return int(self.gt_counts.shape[1])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fields as a dict of arrays (what :func:`wsolkit.evaluation.cached_result`
        stores with ``arrays=``)."""
        return {f"matches_{name}": np.asarray(getattr(self, name)) for name in _FIELDS}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> DetectionMatches:
        """The inverse of :meth:`to_arrays` (extra entries are ignored)."""
        missing = [name for name in _FIELDS if f"matches_{name}" not in arrays]
        if missing:
            raise EvaluationError(f"DetectionMatches.from_arrays: no entries {missing}; expected "
                                  "the dict DetectionMatches.to_arrays() made.")
        return cls(**{name: np.asarray(arrays[f"matches_{name}"]) for name in _FIELDS})


_FIELDS = ("iou_thresholds", "category_ids", "category", "scene", "score", "tp", "fp", "gt_counts")
#: The entries of :meth:`DetectionMatches.to_arrays` (the ``arrays=`` of a cached result).
MATCH_ARRAYS = tuple(f"matches_{name}" for name in _FIELDS)


def match_detections(coco_gt, results: list[dict], image_ids: Sequence[int],
                     iou_thresholds: Sequence[float] = (0.0, 0.25), *, max_dets: int = 100,
                     area: str = "all") -> DetectionMatches:
    """COCOeval's matching of detections to ground truth, kept per detection.

    Runs ``COCOeval.evaluate`` with the settings of :func:`wsolkit.metrics.coco_detection_eval`
    (bounding boxes, these IoU thresholds, one area range, ``max_dets`` per image and category)
    and reads its per-image results the way ``COCOeval.accumulate`` does.

    Args:
        coco_gt: ``pycocotools.coco.COCO`` ground truth.
        results: COCO results list (:func:`wsolkit.metrics.detections_to_coco`); may be empty.
        image_ids: the evaluated images, in the order of the scenes (``scene`` indexes it).
        iou_thresholds: distinct values in ``[0, 1]``.
        max_dets: detections kept per image and category.
        area: ``"all"``, ``"small"``, ``"medium"`` or ``"large"``.

    Raises:
        EvaluationError: detections of images that are not in ``image_ids``, repeated image ids,
            or bad IoU thresholds.
    """
    from wsolkit.metrics import evaluated_cocoeval

    ious = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    if ious.size == 0 or np.any((ious < 0) | (ious > 1)) or np.unique(ious).size != ious.size:
        raise EvaluationError(f"iou_thresholds = {iou_thresholds!r}; expected distinct values "
                              "in [0, 1].")
    ids = [int(i) for i in image_ids]
    position = {image_id: s for s, image_id in enumerate(ids)}
    if len(position) != len(ids):
        raise EvaluationError("match_detections: image_ids repeat an id; give every scene once.")
    stray = {int(r["image_id"]) for r in results} - set(position)
    if stray:
        raise EvaluationError(f"match_detections: {len(stray)} detected images are not among "
                              f"the {len(ids)} image_ids (e.g. {sorted(stray)[:5]}).")
    evaluator = evaluated_cocoeval(coco_gt, results, ious, max_dets=max_dets, area=area,
                                   image_ids=ids, error=EvaluationError)
    params = evaluator.params
    cats = [int(c) for c in params.catIds]
    n_images = len(params.imgIds)
    gt_counts = np.zeros((len(cats), len(ids)), dtype=np.int64)
    category, scene, score, tp, fp = [], [], [], [], []
    for k in range(len(cats)):
        entries = [e for e in evaluator.evalImgs[k * n_images:(k + 1) * n_images] if e is not None]
        if not entries:
            continue
        for e in entries:
            gt_counts[k, position[int(e["image_id"])]] = int(np.count_nonzero(e["gtIgnore"] == 0))
        scores = np.concatenate([e["dtScores"][0:max_dets] for e in entries])
        if scores.size == 0:
            continue
        # COCOeval.accumulate's ranking, ties included.
        order = np.argsort(-scores, kind="mergesort")
        matched = np.concatenate([e["dtMatches"][:, 0:max_dets] for e in entries], axis=1)[:, order]
        ignored = np.concatenate([e["dtIgnore"][:, 0:max_dets] for e in entries], axis=1)[:, order]
        owners = np.concatenate([np.full(len(e["dtScores"][0:max_dets]), position[int(e["image_id"])])
                                 for e in entries])[order]
        category.append(np.full(scores.size, k))
        scene.append(owners)
        score.append(scores[order])
        tp.append(np.logical_and(matched, np.logical_not(ignored)))
        fp.append(np.logical_and(np.logical_not(matched), np.logical_not(ignored)))
    t = ious.size
    return DetectionMatches(
        iou_thresholds=ious, category_ids=np.asarray(cats, dtype=np.int64),
        category=np.concatenate(category).astype(np.int64) if category else np.zeros(0, np.int64),
        scene=np.concatenate(scene).astype(np.int64) if scene else np.zeros(0, np.int64),
        score=np.concatenate(score).astype(np.float64) if score else np.zeros(0),
        tp=np.concatenate(tp, axis=1) if tp else np.zeros((t, 0), bool),
        fp=np.concatenate(fp, axis=1) if fp else np.zeros((t, 0), bool),
        gt_counts=gt_counts)


def _check_weights(weights, num_scenes: int) -> np.ndarray:
    w = np.ones((1, num_scenes)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != num_scenes or np.any(w < 0):
        raise EvaluationError(f"weights have shape {w.shape}; expected (R, {num_scenes}) "
                              "non-negative counts, one per scene.")
    return w


def detection_metrics(matches: DetectionMatches, weights=None) -> dict[str, np.ndarray]:
    """COCOeval's accumulate and summary with every scene weighted.

    For category ``k`` the ranked detections add ``w[scene]`` to the true or false positives, and
    ``npig = sum_s w[s] * gt_counts[k, s]`` objects are to be found; precision is interpolated
    (the best precision at any higher recall) and read at the 101 recall points
    (:data:`RECALL_GRID`), 0 beyond the highest recall reached. A category without objects under
    the weights is left out (COCO's rule), as in every mean below.

    Args:
        matches: from :func:`match_detections`.
        weights: ``(R, S)`` or ``(S,)`` non-negative scene weights; ``None``: every scene once.

    Returns:
        ``{"map": (R, T)`` mAP in percent, ``"precision": (R, T, 101)`` the class-mean
        interpolated precision (fractions; the curve whose mean is the mAP, as
        :func:`wsolkit.metrics.precision_recall_curve`), ``"recall": (R, T)`` the class-mean
        highest recall in percent (COCOeval's ``eval["recall"]``), ``"per_class": (R, T, 101,
        K)`` the precision of every category (NaN where it is left out)``}``.
    """
    w = _check_weights(weights, matches.num_scenes)
    n_rep, n_iou, n_grid = w.shape[0], matches.iou_thresholds.size, RECALL_GRID.size
    n_cat = matches.category_ids.size
    precision = np.full((n_rep, n_iou, n_grid, n_cat), np.nan)
    recall = np.full((n_rep, n_iou, n_cat), np.nan)
    for k in range(n_cat):
        npig = w @ matches.gt_counts[k].astype(np.float64)
        rows = np.flatnonzero(matches.category == k)
        if rows.size == 0:
            precision[npig > 0, :, :, k] = 0.0
            recall[npig > 0, :, k] = 0.0
            continue
        wd = w[:, matches.scene[rows]][:, None, :]
        tp = np.cumsum(wd * matches.tp[None, :, rows], axis=-1)
        fp = np.cumsum(wd * matches.fp[None, :, rows], axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            rc = tp / npig[:, None, None]
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[..., ::-1], axis=-1)[..., ::-1]
        for r in np.flatnonzero(npig > 0):
            for t in range(n_iou):
                index = np.searchsorted(rc[r, t], RECALL_GRID, side="left")
                inside = index < rows.size
                precision[r, t, :, k] = np.where(inside, pr[r, t, np.minimum(index, rows.size - 1)], 0.0)
                recall[r, t, k] = rc[r, t, -1]
    mean_ap = np.full((n_rep, n_iou), np.nan)
    curve = np.full((n_rep, n_iou, n_grid), np.nan)
    mean_recall = np.full((n_rep, n_iou), np.nan)
    for r in range(n_rep):
        for t in range(n_iou):
            p = precision[r, t]
            keep = ~np.isnan(p).any(axis=0)
            if keep.any():
                # The expressions of wsolkit.metrics, for equal rounding.
                mean_ap[r, t] = float(p[~np.isnan(p)].mean() * 100)
                curve[r, t] = p[:, keep].mean(axis=1)
                mean_recall[r, t] = float(recall[r, t, keep].mean() * 100)
    return {"map": mean_ap, "precision": curve, "recall": mean_recall, "per_class": precision}


def bootstrap_weights(sizes: Sequence[int], replicates: int = 1000, *,
                      seed: int = 0) -> list[np.ndarray]:
    """Scene weights for a bootstrap over the test scenes of every seed.

    Replicate ``r`` draws, within every seed ``s``, ``sizes[s]`` scenes with replacement, in
    the order of :func:`wsolkit.reporting.bootstrap_statistic` (one generator, replicate by
    replicate, seed by seed), and counts how often each scene was drawn.

    Args:
        sizes: the number of test scenes of every seed.
        replicates: ``R``.
        seed: the generator's seed.

    Returns:
        One ``(1 + R, sizes[s])`` float64 array per seed: row 0 all ones (the full sample), then
        the counts of every replicate.
    """
    if not sizes or min(sizes) < 1:
        raise EvaluationError(f"bootstrap_weights: sizes {list(sizes)}; expected at least one "
                              "seed and one scene per seed.")
    rng = np.random.default_rng(seed)
    out = [np.ones((1 + replicates, n)) for n in sizes]
    for r in range(replicates):
        for s, n in enumerate(sizes):
            out[s][1 + r] = np.bincount(rng.integers(0, n, size=n), minlength=n)
    return out


def seed_interval(values: Sequence[np.ndarray], *,
                  confidence: float = 0.95) -> tuple[float, float, float]:
    """The estimate and interval of a statistic computed under :func:`bootstrap_weights`.

    Args:
        values: one ``(1 + R,)`` array per seed: the statistic on the full sample, then on every
            replicate (the same replicate index in every seed is one replicate).
        confidence: the percentile interval's coverage.

    Returns:
        ``(estimate, low, high)``: the mean over seeds of the full-sample values, and the
        percentiles of the replicates' means over seeds (NaN replicates are left out, as in
        :func:`wsolkit.reporting.bootstrap_statistic`). All three are NaN when the statistic
        is undefined on a full sample (a ratio over a zero): no verdict can come of it
        (:func:`wsolkit.reporting.verdict` calls NaN bounds inconclusive).
    """
    stacked = np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in values])
    if stacked.shape[1] < 2:
        raise EvaluationError(f"seed_interval: {stacked.shape[1]} values per seed; expected the "
                              "full sample and at least one replicate.")
    if not np.all(np.isfinite(stacked[:, 0])):
        return float("nan"), float("nan"), float("nan")
    tail = (1 - confidence) / 2 * 100
    low, high = np.nanpercentile(stacked[:, 1:].mean(axis=0), [tail, 100 - tail])
    return float(stacked[:, 0].mean()), float(low), float(high)


#: How two arms' per-seed bootstrap values are compared (:func:`compare_per_seed`).
COMPARISONS = ("diff", "gain", "ratio")


def compare_per_seed(first: Sequence[np.ndarray], second: Sequence[np.ndarray],
                     how: str = "diff") -> tuple[float, float, float]:
    """Two arms measured under the same :func:`bootstrap_weights` (one ``(1 + R,)`` array per
    seed each), compared replicate by replicate within each seed (so the comparison is paired
    by scene): ``"diff"`` first - second, ``"gain"`` the relative gain in percent
    (:func:`relative_gain`), ``"ratio"`` first / second; then :func:`seed_interval`.

    Raises:
        EvaluationError: an unknown ``how``, or arms with different numbers of seeds.
    """
    functions = {"diff": np.subtract, "gain": relative_gain, "ratio": ratio}
    if how not in functions:
        raise EvaluationError(f"compare_per_seed: how = {how!r}; expected one of {COMPARISONS}.")
    if len(first) != len(second):
        raise EvaluationError(f"compare_per_seed: {len(first)} seeds against {len(second)}; "
                              "expected the same seeds in both arms.")
    return seed_interval([functions[how](a, b) for a, b in zip(first, second)])


def format_interval(stat: Sequence[float], digits: int = 2) -> str:
    """``(estimate, low, high)`` as a table cell: ``"0.76 [0.74, 0.78]"``."""
    estimate, low, high = stat
    return f"{estimate:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def ratio(value, reference):
    """``value / reference`` (NaN where the reference is not positive). Arrays broadcast."""
    value = np.asarray(value, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(reference > 0, value / reference, np.nan)


def relative_gain(value, reference):
    """``100 * (value / reference - 1)``: percent change over the reference (NaN where the
    reference is not positive). Arrays broadcast."""
    value = np.asarray(value, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(reference > 0, 100 * (value / reference - 1), np.nan)


# ---------------------------------------------------------------------------------------------
# Per-cell scores: object against background, weighted by scene
# ---------------------------------------------------------------------------------------------


def pair_counts(values, positive, scene, num_scenes: int) -> np.ndarray:
    """Correctly ordered (positive, negative) pairs between every two scenes.

    ``U[a, b] = sum over positive cells p of scene a and negative cells q of scene b of
    [v_q < v_p] + 0.5 [v_q = v_p]``: the Mann-Whitney count split by scene, so that the AUC of
    any scene weighting is a quadratic form in the weights (:func:`weighted_auc`).

    Args:
        values: ``(M,)`` per-cell scores.
        positive: ``(M,)`` bool, object cells.
        scene: ``(M,)`` int scene of every cell, in ``[0, num_scenes)``.
        num_scenes: ``S``.

    Returns:
        ``(S, S)`` float64.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    pos = np.asarray(positive, dtype=bool).reshape(-1)
    owner = np.asarray(scene, dtype=np.int64).reshape(-1)
    if not v.shape == pos.shape == owner.shape:
        raise EvaluationError(f"pair_counts: {v.size} values, {pos.size} flags and {owner.size} "
                              "scenes; expected one of each per cell.")
    if owner.size and (owner.min() < 0 or owner.max() >= num_scenes):
        raise EvaluationError(f"pair_counts: scene indices outside [0, {num_scenes}).")
    pos_values, pos_owner = v[pos], owner[pos]
    counts = np.zeros((num_scenes, num_scenes))
    neg_values, neg_owner = v[~pos], owner[~pos]
    order = np.lexsort((neg_values, neg_owner))  # by scene, then by value
    starts = np.searchsorted(neg_owner[order], np.arange(num_scenes + 1), side="left")
    for b in range(num_scenes):
        negatives = neg_values[order[starts[b]:starts[b + 1]]]
        if negatives.size == 0 or pos_values.size == 0:
            continue
        below = np.searchsorted(negatives, pos_values, side="left")
        tied = np.searchsorted(negatives, pos_values, side="right") - below
        counts[:, b] = np.bincount(pos_owner, weights=below + 0.5 * tied, minlength=num_scenes)
    return counts


def weighted_auc(pairs: np.ndarray, positives, negatives, weights) -> np.ndarray:
    """The AUC (object cells above background cells) of every scene weighting.

    ``AUC(w) = w U w / ((w . P) (w . N))``, with ``U`` from :func:`pair_counts` and ``P``,
    ``N`` the positive and negative cells of every scene; with all weights one it is the pooled
    Mann-Whitney AUC (:func:`wsolkit.methods.cosine_dcm.score_separation_auc`).

    Args:
        pairs: ``(S, S)``.
        positives, negatives: ``(S,)`` counts per scene.
        weights: ``(R, S)`` or ``(S,)``.

    Returns:
        ``(R,)`` float64 (NaN where a weighting has no positive or no negative cell).
    """
    w = _check_weights(weights, np.asarray(pairs).shape[0])
    numerator = np.einsum("ra,ab,rb->r", w, np.asarray(pairs, dtype=np.float64), w)
    denominator = (w @ np.asarray(positives, dtype=np.float64)) * (w @ np.asarray(negatives, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / denominator, np.nan)


def weighted_share(hits, totals, weights) -> np.ndarray:
    """``100 * (w . hits) / (w . totals)`` for every scene weighting: a rate pooled over scenes
    (kept object cells over object cells, say). ``(R,)`` float64, NaN where nothing counts."""
    w = _check_weights(weights, np.asarray(hits).reshape(-1).size)
    num = w @ np.asarray(hits, dtype=np.float64).reshape(-1)
    den = w @ np.asarray(totals, dtype=np.float64).reshape(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, 100 * num / den, np.nan)


# ---------------------------------------------------------------------------------------------
# Figures of scenes
# ---------------------------------------------------------------------------------------------


def class_palette(num_classes: int) -> np.ndarray:
    """``(C, 4)`` RGBA colours, one per class: matplotlib's ``tab10`` up to ten classes, evenly
    spaced hues beyond."""
    import matplotlib.pyplot as plt

    if num_classes <= 10:
        return plt.get_cmap("tab10")(np.arange(num_classes) / 10)
    return plt.get_cmap("hsv")(np.arange(num_classes) / num_classes)


def short_class_name(name: str) -> str:
    """A class name short enough for a panel: the benchmark's ``"red_solid_ochre_plain"``
    becomes ``"red solid/ochre"`` (the part, then the body colour its tree pair shares); other
    names lose their underscores."""
    words = name.split("_")
    return f"{words[0]} {words[1]}/{words[2]}" if len(words) == 4 else name.replace("_", " ")


def draw_class_boxes(ax, boxes, labels, palette, *, linestyle: str = "-",
                     linewidth: float = 1.6) -> None:
    """``[x1, y1, x2, y2]`` boxes in image pixels, each in its class's colour."""
    from matplotlib.patches import Rectangle

    for box, label in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(labels).reshape(-1)):
        x1, y1, x2, y2 = (float(v) for v in box)
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                               edgecolor=palette[int(label)], linewidth=linewidth,
                               linestyle=linestyle))


def show_class_map(ax, image, class_map, *, palette, class_names: Sequence[str], gt_boxes=(),
                   gt_labels=(), detections=None, title: str = "", alpha: float = 0.45) -> None:
    """One panel: a scene, its colour-coded class map (eq. 9; 0 is background), the ground
    truth dashed and the detections solid, named with their scores below the panel.

    Args:
        ax: the matplotlib axes.
        image: ``(H, W, 3)`` float in ``[0, 1]`` (``wsolkit.viz.to_display``).
        class_map: ``(H, W)`` int, ``c + 1`` for class ``c``, 0 for background.
        palette: ``(C, 4)`` colours (:func:`class_palette`).
        class_names: the ``C`` class names.
        gt_boxes, gt_labels: the ground truth, in the image's pixels.
        detections: a ``wsolkit.methods.cosine_dcm.Detections`` with one box threshold, or
            ``None``.
        title: the panel's title.
        alpha: the opacity of the class colours.
    """
    labels = np.asarray(class_map)
    ax.imshow(image)
    overlay = np.zeros((*labels.shape, 4))
    present = labels > 0
    overlay[present] = np.asarray(palette)[labels[present] - 1]
    overlay[..., 3] = present * alpha
    ax.imshow(overlay)
    draw_class_boxes(ax, gt_boxes, gt_labels, palette, linestyle="--")
    named = ""
    if detections is not None:
        draw_class_boxes(ax, detections.boxes[:, 0], detections.classes, palette)
        best = np.argsort(-np.asarray(detections.scores), kind="stable")
        named = _name_lines([f"{short_class_name(class_names[detections.classes[k]])} "
                             f"{detections.scores[k]:.2f}" for k in best])
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(named or ("nothing detected" if detections is not None else ""), fontsize=6)
    ax.set_xticks([])
    ax.set_yticks([])


def _name_lines(names: Sequence[str], shown: int = 4) -> str:
    """Up to ``shown`` names, two per line, and how many more there are."""
    lines = [", ".join(names[k:k + 2]) for k in range(0, min(len(names), shown), 2)]
    if len(names) > shown:
        lines.append(f"+{len(names) - shown} more")
    return "\n".join(lines)


def plot_precision_recall(ax, recall, curves: Mapping[str, np.ndarray], *, colours=None,
                          mark_recall: float | None = 0.3, title: str = "") -> None:
    """Precision against recall (both in percent on the axes), one line per method.

    Args:
        ax: the axes.
        recall: ``(G,)`` recall points (fractions, :data:`RECALL_GRID`).
        curves: ``{label: (G,) precision (fractions)}``; the label goes into the legend.
        colours: ``{label: colour}``, or ``None`` for matplotlib's cycle.
        mark_recall: a dotted line at this recall.
        title: the panel's title.
    """
    for label, precision in curves.items():
        ax.plot(np.asarray(recall) * 100, np.asarray(precision) * 100, label=label,
                color=None if colours is None else colours[label])
    if mark_recall is not None:
        ax.axvline(mark_recall * 100, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("recall (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)


def class_map_grid(images: Sequence[np.ndarray], rows: Sequence[Sequence[Mapping]], *, palette,
                   class_names: Sequence[str], gt_boxes: Sequence, gt_labels: Sequence,
                   panel: float = 2.3, title: str | None = None, legend: bool = True):
    """Scenes in rows, one panel per method (Fig. 1 and 5 of Barz & Denzler).

    Args:
        images: one ``(H, W, 3)`` float image per row (``wsolkit.viz.to_display``).
        rows: per row, its panels: ``{"class_map": (H, W) int or None, "detections":
            Detections or None, "title": str}`` (:func:`show_class_map`; no class map and no
            detections draws the scene with its ground truth).
        palette, class_names: as in :func:`show_class_map`.
        gt_boxes, gt_labels: the ground truth of every row.
        panel: inches per panel.
        title: the figure's title.
        legend: a colour legend of the classes below the panels (up to 12 classes).

    Returns:
        The ``Figure`` (not shown).
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n_cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(panel * n_cols, panel * len(rows) + 0.6),
                             squeeze=False)
    for r, (image, panels) in enumerate(zip(images, rows, strict=True)):
        for c, spec in enumerate(panels):
            labels = spec.get("class_map")
            show_class_map(axes[r, c], image,
                           np.zeros(image.shape[:2], np.int64) if labels is None else labels,
                           palette=palette, class_names=class_names, gt_boxes=gt_boxes[r],
                           gt_labels=gt_labels[r], detections=spec.get("detections"),
                           title=spec.get("title", ""))
            if labels is None and spec.get("detections") is None:
                axes[r, c].set_xlabel(_name_lines([short_class_name(class_names[int(k)])
                                                   for k in gt_labels[r]]), fontsize=6)
        for c in range(len(panels), n_cols):
            axes[r, c].axis("off")
    if legend and len(class_names) <= 12:
        fig.legend(handles=[Patch(color=palette[k], label=short_class_name(n))
                            for k, n in enumerate(class_names)],
                   loc="lower center", ncol=5, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.07 if legend else 0, 1, 1))
    return fig


def plot_cell_histogram(ax, histogram: Mapping, *, title: str = "",
                        marks: Sequence[tuple[float, str]] = ()) -> None:
    """Fig. 2's histograms: object cells (a line) against background cells (filled), each
    normalised to sum 1, with optional vertical marks ``(value, linestyle)``."""
    from wsolkit.viz import GT_COLOUR

    edges = np.asarray(histogram["edges"])
    for part, colour in (("object", GT_COLOUR), ("background", "grey")):
        counts = np.asarray(histogram[part], dtype=float)
        ax.stairs(counts / max(counts.sum(), 1.0), edges, color=colour, linewidth=1.5,
                  label=f"{part} cells", fill=part == "background",
                  alpha=0.5 if part == "background" else 1.0)
    for value, style in marks:
        ax.axvline(value, color="black", linestyle=style, linewidth=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("best class score of a cell", fontsize=8)
    ax.legend(fontsize=7)


def cell_score_figure(image: np.ndarray, rows: Mapping[str, Mapping], *, theta_cls: float,
                      theta_sim: float):
    """Fig. 2 of Barz & Denzler: per network (one row each), a scene's best class score per
    cell before and after the activation and what eq. 9 keeps, then the histograms of all test
    cells before and after.

    Args:
        image: ``(H, W, 3)`` float, the scene at the network's input size.
        rows: ``{row label: {"before", "after", "kept": (h, w) maps, "hist_before",
            "hist_after": histograms (:func:`plot_cell_histogram`), "auc_before",
            "auc_after": floats}}``; ``kept`` is the after-activation score where eq. 9 keeps
            the cell and 0 elsewhere.
        theta_cls, theta_sim: eq. 9's thresholds (marked on the after-activation histogram).

    Returns:
        The ``Figure`` (not shown).
    """
    import matplotlib.pyplot as plt
    import torch

    from wsolkit.cam import upsample_maps

    fig, axes = plt.subplots(len(rows), 5, figsize=(13.5, 2.7 * len(rows)), squeeze=False)
    for r, (label, row) in enumerate(rows.items()):
        panels = (("before the activation", row["before"], None),
                  ("after the activation", row["after"], (0, 1)),
                  (f"kept at {theta_cls} / {theta_sim}", row["kept"], (0, 1)))
        for c, (name, values, limits) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image)
            up = upsample_maps(torch.as_tensor(values)[None].float(), image.shape[:2],
                               mode="bilinear")[0]
            shown = ax.imshow(up, cmap="jet", alpha=0.55, vmin=None if limits is None else limits[0],
                              vmax=None if limits is None else limits[1])
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
            ax.set_title(name, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=9)
        for c, stage in ((3, "before"), (4, "after")):
            marks = ((theta_cls, ":"), (theta_sim, "--")) if stage == "after" else ()
            plot_cell_histogram(axes[r, c], row[f"hist_{stage}"], marks=marks,
                                title=f"all test cells, {stage} (AUC {row[f'auc_{stage}']:.2f})")
    fig.tight_layout()
    return fig
