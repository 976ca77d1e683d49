"""RCAM (Zhang, MASc thesis 2021, chapter 5): WGAP, recombined weights, two-stage localization.

The first two parts are chapter 02's (:mod:`wsolkit.methods.improving_cam`): WGAP (eqs. 18-19)
is the method ``"wgap"`` and the recombined CAM (eq. 21) the score map ``"recombined"``. The
thesis writes eq. 21 as ``M_p - M_n`` with ``M_n = sum_(w_n < 0) w_n F_n`` (eq. 20), the
conference paper as ``M_p + |M_n|``: ``M_p - M_n`` is ``sum_k |w_k| F_k`` for any features, and
for non-negative features ``M_n <= 0``, so ``M_p + |M_n|`` is the same map
(:func:`recombined_equals_printed`, tested in ``tests/test_rcam.py``).

This module adds the third part, the **two-stage localization** (section 5.4.3) that chooses one
threshold per image without ground truth and without a hyper-parameter:

1. for every candidate threshold (0, 0.05, ... of the normalised map's maximum, section 5.5.1)
   take the box of the largest component (the protocol of :mod:`wsolkit.boxes`);
2. its *border points* are the foreground pixels inside the box on its four edges (the pixels
   that determine the box); a threshold with fewer than 4 of them is skipped (no box);
3. the *seed vectors* are the last feature map's vectors at the cells of the border points;
   each seed's cosine similarity to every cell (eq. 22), averaged over the seeds, gives one
   similarity map per box;
4. the box whose similarity map has the lowest variance wins: a box edge on the object's
   boundary sees both object and background, so its mean similarity map has little contrast.

Readings where the thesis is silent: the foreground is the protocol's (8-bit, strict ``>``), so
border points are counted on the upsampled map's pixels; a pixel maps to the feature cell
``floor(y h / H), floor(x w / W)``, and a seed is counted once per cell; the similarity map
covers every cell, the seeds' own included; the variance is the population variance over the
cells. The search becomes a threshold rule of the evaluator (:func:`two_stage_chooser`).

The criterion as written has a bias the thesis does not discuss: averaging more seeds smooths the
mean map, so a box with many border points (the whole image, at the lowest thresholds) has a low
variance whatever its seeds resemble. ``contrast="per_seed"`` averages each seed's own variance
instead, which does not shrink with the number of seeds; the chapter measures both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from wsolkit.boxes import largest_component_boxes
from wsolkit.methods.improving_cam import PAPER_THRESHOLDS, recombined_cams, signed_cams

__all__ = [
    "CONTRASTS",
    "MIN_BORDER_POINTS",
    "PAPER_TABLE",
    "TwoStageSearch",
    "border_points",
    "plot_two_stage",
    "printed_recombined_cams",
    "recombined_equals_printed",
    "seed_similarity",
    "two_stage_chooser",
    "two_stage_search",
]

#: Fewer border points than this and a threshold has no box (section 5.5.1).
MIN_BORDER_POINTS = 4
#: How a box's contrast is measured: ``"mean_map"``, the variance of the seeds' mean similarity
#: map (section 5.4.3 as written); ``"per_seed"``, the mean of each seed's own map's variance.
CONTRASTS = ("mean_map", "per_seed")

#: Table 10 (CUB-200-2011, VGG16; top-1 cls err, top-1 loc err), every row as printed.
PAPER_TABLE = {
    "VGGnet-CAM": (23.86, 66.05), "VGGnet-ACoL": (28.10, 54.08), "VGGnet-SPG": (24.50, 50.00),
    "VGGnet-ADL": (34.73, 47.64), "VGGnet-DANet": (24.60, 47.48), "VGGnet-Cutmix": (None, 47.47),
    "VGGnet-EMIL": (25.23, 42.54), "VGGnet-MCI": (27.41, 41.88), "VGGnet-ICL": (26.6, 42.5),
    "VGGnet-RCAM": (24.06, 38.09),
}


def printed_recombined_cams(features: torch.Tensor, weight: torch.Tensor, classes,
                            form: str = "thesis") -> torch.Tensor:
    """Eq. 21 as printed, from the signed parts of eq. 20: ``M_p - M_n`` (``"thesis"``) or
    ``M_p + |M_n|`` (``"conference"``, the conference paper's eq. 3)."""
    positive, negative = signed_cams(features, weight, classes)
    if form == "thesis":
        return positive - negative
    if form == "conference":
        return positive + negative.abs()
    raise ValueError(f"printed_recombined_cams: form = {form!r}; expected 'thesis' or "
                     "'conference'.")


def _foreground(score_map: np.ndarray, threshold: float) -> np.ndarray:
    # The reference protocol's foreground (wsolkit.boxes.protocol, step 1).
    u8 = (score_map * 255).astype(np.uint8)
    return u8 > int(threshold * u8.max())


def border_points(foreground: np.ndarray, box: Sequence[int]) -> np.ndarray:
    """The foreground pixels inside ``box`` that lie on its four edges.

    Args:
        foreground: ``(H, W)`` bool.
        box: ``[x1, y1, x2, y2]`` (inclusive, as :mod:`wsolkit.boxes` returns it).

    Returns:
        ``(P, 2)`` int64 ``(row, col)``, each pixel once: those in the topmost, bottommost,
        leftmost and rightmost foreground row/column inside the box.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    inside = np.zeros_like(foreground, dtype=bool)
    inside[y1:y2 + 1, x1:x2 + 1] = foreground[y1:y2 + 1, x1:x2 + 1]
    rows, cols = np.nonzero(inside)
    if rows.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    on_edge = ((rows == rows.min()) | (rows == rows.max())
               | (cols == cols.min()) | (cols == cols.max()))
    return np.stack([rows[on_edge], cols[on_edge]], axis=1).astype(np.int64)


def seed_similarity(features: torch.Tensor, cells: np.ndarray, *,
                    per_seed: bool = False) -> torch.Tensor:
    """Eq. 22: the cosine similarity of every cell to each seed vector.

    Args:
        features: ``(K, h, w)``.
        cells: ``(S, 2)`` seed cells ``(row, col)``.
        per_seed: return every seed's map instead of their mean.

    Returns:
        ``(h, w)`` the mean over the seeds, or ``(S, h, w)`` with ``per_seed``.
    """
    k, h, w = features.shape
    flat = torch.nn.functional.normalize(features.reshape(k, h * w).float(), dim=0)
    seeds = flat[:, torch.as_tensor(cells[:, 0] * w + cells[:, 1], dtype=torch.long)]
    maps = (seeds.T @ flat).view(-1, h, w)
    return maps if per_seed else maps.mean(0)


@dataclass
class TwoStageSearch:
    """The two-stage search of one map.

    Attributes:
        thresholds: ``(T,)`` candidate thresholds.
        boxes: ``(T, 4)`` the largest component's box at each.
        points: ``(T,)`` int64 border points of each box.
        variances: ``(T,)`` float64 variance of each box's mean similarity map; NaN where the
            threshold is skipped (fewer than :data:`MIN_BORDER_POINTS` border points).
        index: the winning threshold's index, -1 when every threshold is skipped.
    """

    thresholds: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    variances: np.ndarray
    index: int

    @property
    def threshold(self) -> float:
        """The chosen threshold, NaN when none qualifies."""
        return float(self.thresholds[self.index]) if self.index >= 0 else float("nan")


def two_stage_search(score_map, features: torch.Tensor, thresholds=PAPER_THRESHOLDS,
                     min_points: int = MIN_BORDER_POINTS,
                     contrast: str = "mean_map") -> TwoStageSearch:
    """Section 5.4.3 for one image.

    Args:
        score_map: ``(H, W)`` float map in ``[0, 1]`` (normalised and upsampled).
        features: ``(K, h, w)`` the last feature map of the same image.
        thresholds: candidate thresholds, increasing, in ``[0, 1]``.
        min_points: border points a box needs.
        contrast: one of :data:`CONTRASTS`.

    Returns:
        :class:`TwoStageSearch` (``variances`` holds the contrast chosen).
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"two_stage_search: contrast = {contrast!r}; expected one of "
                         f"{CONTRASTS}.")
    values = np.asarray(score_map, dtype=np.float64)
    if values.ndim != 2 or not np.isfinite(values).all():
        raise ValueError(f"two_stage_search: score_map has shape {values.shape} or non-finite "
                         "values; expected one finite (H, W) map in [0, 1].")
    if features.ndim != 3:
        raise ValueError(f"two_stage_search: features has shape {tuple(features.shape)}; "
                         "expected (K, h, w) for one image.")
    t = np.asarray(thresholds, dtype=np.float64)
    H, W = values.shape
    h, w = features.shape[-2:]
    boxes = largest_component_boxes(values, t)
    points = np.zeros(len(t), dtype=np.int64)
    variances = np.full(len(t), np.nan)
    for i, threshold in enumerate(t):
        found = border_points(_foreground(values, threshold), boxes[i])
        points[i] = len(found)
        if len(found) < min_points:
            continue
        cells = np.unique(np.stack([found[:, 0] * h // H, found[:, 1] * w // W], axis=1), axis=0)
        maps = seed_similarity(features, cells, per_seed=contrast == "per_seed").double()
        variances[i] = float(maps.flatten(-2).var(dim=-1, unbiased=False).mean())
    index = int(np.nanargmin(variances)) if np.isfinite(variances).any() else -1
    return TwoStageSearch(t, boxes, points, variances, index)


def two_stage_chooser(thresholds=PAPER_THRESHOLDS, min_points: int = MIN_BORDER_POINTS,
                      contrast: str = "mean_map"):
    """``choose(maps, features=...) -> (N,)`` thresholds (NaN where none qualifies) for
    :func:`wsolkit.evaluation.evaluate_image_thresholds`, which passes each batch's last
    feature map to a chooser whose ``needs_features`` is true."""
    if contrast not in CONTRASTS:
        raise ValueError(f"two_stage_chooser: contrast = {contrast!r}; expected one of "
                         f"{CONTRASTS}.")

    def choose(maps, features) -> np.ndarray:
        return np.array([two_stage_search(m, f, thresholds, min_points, contrast).threshold
                         for m, f in zip(np.asarray(maps), features)])

    choose.needs_features = True
    return choose


def recombined_equals_printed(features: torch.Tensor, weight: torch.Tensor, classes) -> bool:
    """Whether the thesis' ``M_p - M_n``, the conference paper's ``M_p + |M_n|`` and
    ``sum_k |w_k| F_k`` (:func:`~wsolkit.methods.improving_cam.recombined_cams`) agree.

    ``M_p - M_n`` is ``sum_k |w_k| F_k`` for any features; ``M_p + |M_n|`` equals it where
    ``M_n <= 0``, which holds for non-negative (post-ReLU) features.
    """
    reference = recombined_cams(features, weight, classes)
    return all(bool(torch.allclose(reference, printed_recombined_cams(features, weight, classes,
                                                                      form), rtol=1e-5, atol=1e-5))
               for form in ("thesis", "conference"))


def plot_two_stage(image, score_map, features: torch.Tensor, gt_boxes, *,
                   thresholds=PAPER_THRESHOLDS, fixed: float = 0.2):
    """Fig. 31 for one image: the variance of each box's similarity map against the threshold
    (skipped thresholds left out), the chosen one marked, and the chosen box beside the box at
    the ``fixed`` threshold (dashed), ground truth in red.

    Args:
        image: ``(3, H, W)`` uint8.
        score_map: ``(H, W)`` map in ``[0, 1]``.
        features: ``(K, h, w)`` the last feature map of the image.
        gt_boxes: ``(G, 4)`` ground truth.
        thresholds: the candidates.
        fixed: the fixed threshold drawn for comparison.

    Returns:
        The ``Figure`` (not shown).
    """
    import matplotlib.pyplot as plt

    from wsolkit import viz
    from wsolkit.boxes import box_iou, boxes_at_threshold

    values = np.asarray(score_map, dtype=np.float64)
    found = two_stage_search(values, features, thresholds)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.0), gridspec_kw={"width_ratios": [1, 1.8, 1]})
    viz.show_localization(axes[0], image, score_map=values, title="score map")
    kept = np.isfinite(found.variances)
    axes[1].plot(found.thresholds[kept], found.variances[kept], "o-", markersize=3)
    if found.index >= 0:
        axes[1].plot(found.threshold, found.variances[found.index], "*", color="black",
                     markersize=12, label=f"lowest: {found.threshold:.2f}")
        axes[1].legend(fontsize=8)
    last = found.thresholds[kept].max() if kept.any() else 0.0
    axes[1].set_xlabel(f"threshold (none above {last:.2f}: < {MIN_BORDER_POINTS} border points)")
    axes[1].set_ylabel("variance of the similarity map")
    axes[1].set_xlim(0, 1)
    chosen = found.threshold if found.index >= 0 else fixed
    boxes = {t: boxes_at_threshold(values, t)[0] for t in (fixed, chosen)}
    iou = {t: float(box_iou(b[None], np.asarray(gt_boxes)).max()) for t, b in boxes.items()}
    viz.show_localization(axes[2], image, gt_boxes=gt_boxes, pred_boxes=[boxes[chosen]])
    viz.draw_box(axes[2], boxes[fixed], "#ff7f0e", linestyle="--")
    axes[2].set_title(f"{fixed:g} (dashed): IoU {iou[fixed]:.2f}\ntwo-stage {chosen:.2f}: "
                      f"IoU {iou[chosen]:.2f}", fontsize=9)
    fig.tight_layout()
    return fig
