"""Improving CAM (Zhang, Chang & Bui): weighted GAP, recombined CAM, automatic threshold.

The paper changes the three steps of the CAM pipeline, one fix each:

* **WGAP** (section 4.1, eq. 1). Global average pooling weighs every cell alike. WGAP weighs
  cell ``(i, j)`` of channel ``k`` of the last feature map ``P`` (``(N, K, h, w)``) by the
  spatial softmax of that channel::

      S_k(i, j) = exp(P_k(i, j)) / sum_(i', j') exp(P_k(i', j'))
      G_k = sum_(i, j) P_k(i, j) S_k(i, j) / (w h)

  The printed denominator of ``S`` lacks the exponential (it would not give a distribution);
  the standard spatial softmax is used here, as the text ("2D softmax", "a probability
  distribution") says. The weights already sum to 1, so the final division by ``w h`` makes
  WGAP of a constant map GAP divided by ``w h``: a constant factor a linear classifier can
  absorb, but one that slows SGD from the usual classifier initialisation. ``WGAP()`` keeps
  it as printed; ``WGAP(divide_by_area=False)`` is the softmax-weighted *mean*, which equals
  GAP on constant maps. WGAP has no parameters, so a WGAP network has exactly the state dict
  of its GAP twin.
* **Recombined CAM** (section 4.2, eq. 2-3). With ``w_c`` the classifier row of class ``c``,
  the CAM ``M_c = M_p + M_n`` splits into the channels of positive weight
  (``M_p = sum_(w_ck > 0) w_ck P_k``) and of negative weight (``M_n = sum_(w_ck < 0) w_ck P_k``,
  ``<= 0`` for non-negative features). The paper's map is ``M_p + |M_n|``, i.e.
  ``sum_k |w_ck| P_k`` (the right-hand side of eq. 3, which is what is computed here; both
  sides agree for the non-negative, post-ReLU features of every ``wsolkit`` backbone). It is
  computed post hoc, so training is untouched.
* **Automatic threshold** (section 4.3, Fig. 3). For thresholds ``eta_l = 0, 0.05, ..., 1``
  the target region is ``{M > eta_l max M}`` of the normalised, upsampled map; ``V_l`` is the
  mean map value on the region's boundary and ``D_l = |V_l - V_(l-1)|``. The paper first took the
  largest ``D`` (and found it no better than CAM), then observed that the box only changes
  where ``D`` is well above its average and picks the threshold from ``D`` against its mean
  (the blue line of Fig. 3). Which threshold above the mean it picks is not stated; see
  :data:`RULES` for the readings implemented here and :func:`automatic_thresholds` for the
  exact definitions.

Which map is the CAM of a WGAP network? Its logits are ``w_c . G + b_c``, so the map whose spatial
mean (sum, without the division by ``w h``) is the logit minus the bias is ``sum_k w_ck P_k S_k``
(:func:`softmax_weighted_cams`); the paper instead keeps the usual ``sum_k w_ck P_k`` computed from
the feature map and the classifier weights (section 4.2), which is what the book's evaluation
uses by default for every model.

In a configuration: ``TrainConfig(method={"wgap": {"divide_by_area": False}})`` trains with the
softmax-weighted mean (``{"wgap": {}}``: eq. 1 as printed); the pooling is part of the run's hash,
any launcher trains it and :func:`wsolkit.runs.load_model` rebuilds it. The method registers the
score maps ``"recombined"`` (eq. 3) and ``"softmax_weighted"``, which evaluation takes by name for
any network (the recombined CAM of a plain CAM network is the paper's ablation row), and the two
signed parts of eq. 2, ``"positive_part"`` (``M_p``) and ``"negative_part"`` (``|M_n|``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from wsolkit.cam import ClassSpec, class_activation_maps
from wsolkit.methods.registry import MethodParts, register_method

__all__ = [
    "PAPER_COLUMNS",
    "PAPER_TABLES",
    "PAPER_THRESHOLDS",
    "RULES",
    "AutomaticThresholds",
    "ThresholdInputError",
    "WGAP",
    "automatic_thresholds",
    "boundary_means",
    "boundary_differences",
    "recombined_cams",
    "negative_part_map_fn",
    "paper_difference",
    "plot_signed_parts",
    "plot_threshold_selection",
    "positive_part_map_fn",
    "recombined_map_fn",
    "signed_cams",
    "softmax_weighted_cams",
    "softmax_weighted_map_fn",
    "spatial_softmax",
    "threshold_chooser",
    "wgap",
]

#: The paper's candidate thresholds (section 5): 0, 0.05, ..., 1, fractions of the map maximum.
PAPER_THRESHOLDS = np.round(np.arange(21) * 0.05, 2)

#: Readings of the selection rule of section 4.3 (see :func:`automatic_thresholds`).
RULES = ("first_above_mean", "largest", "last_above_mean")

#: The columns of the paper's Tables 1 and 2.
PAPER_COLUMNS = ("top-1 cls", "top-1 loc", "GT-known loc")
#: Tables 1 (CUB-200-2011) and 2 (ILSVRC) of the paper, every row as printed (``None``: "-").
#: The ILSVRC row of ADL repeats the GT-known value of its CUB row (75.4).
PAPER_TABLES = {
    "cub": ("Table 1", {
        "VGG-CAM[6]": (76.14, 33.95, 55.1), "VGG-ADL[9]": (65.27, 53.36, 75.4),
        "VGG-DANet[9]": (75.40, 52.52, 67.7), "VGG-ACoL[8]": (71.90, 45.92, 59.3),
        "VGG-I²C[13]": (68.40, 56.00, None), "VGG-MEIL[10]": (75.00, 57.46, 73.8),
        "VGG-MCI[15]": (72.59, 58.12, None), "VGG-ICL[11]": (73.40, 57.50, None),
        "VGG-RCAM[12]": (74.91, 61.30, None), "InceptionV3-SPG[7]": (75.50, 46.46, None),
        "InceptionV3-ADL[9]": (70.43, 47.74, None),
        "InceptionV3-DANet[16]": (71.20, 50.55, 67.0),
        "Ours": (75.82, 61.85, 82.32)}),
    "ilsvrc": ("Table 2", {
        "VGG-CAM[6]": (66.6, 42.8, 59.0), "VGG-ADL[9]": (69.48, 44.9, 75.4),
        "VGG-ACoL[8]": (67.5, 45.8, 63.0), "VGG-CutMix[17]": (None, 43.5, None),
        "VGG-I²C[13]": (68.40, 47.4, 63.9), "VGG-MEIL[15]": (73.31, 46.8, None),
        "VGG-ICL[11]": (64.0, 47.2, None), "VGG-RCAM[12]": (67.28, 44.69, None),
        "InceptionV3-CAM[7]": (75.50, 46.3, 64.7), "InceptionV3-ADL[9]": (70.43, 48.7, None),
        "InceptionV3-ACoL[8]": (71.20, 46.7, None), "Ours": (68.32, 50.1, 65.4)}),
}


def paper_difference(dataset: str, row: str, baseline: str, column: str) -> float | None:
    """``row - baseline`` in one column of the paper's table for ``dataset`` (``"cub"`` or
    ``"ilsvrc"``), in points; ``None`` where either value is not printed."""
    rows = PAPER_TABLES[dataset][1]
    k = PAPER_COLUMNS.index(column)
    a, b = rows[row][k], rows[baseline][k]
    return None if a is None or b is None else round(a - b, 2)


class ThresholdInputError(ValueError):
    """Maps or thresholds given to the automatic threshold have the wrong form."""


# --------------------------------------------------------------------------------------------
# WGAP (section 4.1, eq. 1)
# --------------------------------------------------------------------------------------------


def spatial_softmax(features: torch.Tensor) -> torch.Tensor:
    """Per-channel softmax over the cells: ``S_k(i, j)`` of eq. 1.

    Args:
        features: ``(N, K, h, w)`` float feature maps.

    Returns:
        ``(N, K, h, w)``, same dtype and device; every ``(n, k)`` map sums to 1.
    """
    if features.ndim != 4:
        raise ValueError(f"spatial_softmax: features has shape {tuple(features.shape)}; "
                         "expected (N, K, h, w).")
    return torch.softmax(features.flatten(2), dim=-1).view_as(features)


def wgap(features: torch.Tensor, divide_by_area: bool = True) -> torch.Tensor:
    """Weighted global average pooling, eq. 1: ``sum_ij P_k S_k / (w h)``.

    Args:
        features: ``(N, K, h, w)`` float feature maps ``P``.
        divide_by_area: divide by ``w h`` as eq. 1 prints; ``False`` gives the
            softmax-weighted mean ``sum_ij P_k S_k``.

    Returns:
        ``(N, K)``. For a channel constant at ``a`` the result is ``a / (w h)`` (``a`` without
        the division).
    """
    h, w = features.shape[-2:]
    pooled = (features * spatial_softmax(features)).sum(dim=(2, 3))
    return pooled / (h * w) if divide_by_area else pooled


class WGAP(nn.Module):
    """WGAP as a pooling layer: ``(N, K, h, w) -> (N, K)``; no parameters.

    Drop-in for :class:`wsolkit.models.GlobalAvgPool`:
    ``build_model("vgg16_gap", C, pooling=WGAP())``.

    Args:
        divide_by_area: see :func:`wgap`.
    """

    def __init__(self, divide_by_area: bool = True) -> None:
        super().__init__()
        self.divide_by_area = bool(divide_by_area)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return wgap(features, self.divide_by_area)

    def extra_repr(self) -> str:
        return f"divide_by_area={self.divide_by_area}"


def build(model: nn.Module, config, divide_by_area: bool = True) -> MethodParts:
    """WGAP in place of global average pooling (``divide_by_area``: see :func:`wgap`)."""
    return MethodParts(pooling=WGAP(divide_by_area))


# --------------------------------------------------------------------------------------------
# CAM variants (section 4.2, eq. 2-3)
# --------------------------------------------------------------------------------------------


def signed_cams(features: torch.Tensor, weight: torch.Tensor,
                classes: ClassSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The positive and negative parts of the CAM, eq. 2: ``M_c = M_p + M_n``.

    Args:
        features: ``(N, K, h, w)`` feature maps ``P`` before pooling.
        weight: ``(C, K)`` classifier weight.
        classes: as :func:`wsolkit.cam.class_activation_maps` (``(N,)`` for one class per image).

    Returns:
        ``(M_p, M_n)``, each shaped like the CAM (``(N, h, w)`` for ``(N,)`` classes):
        ``M_p`` sums the channels of positive weight, ``M_n`` those of negative weight (weights
        included, so ``M_n <= 0`` where the features are non-negative).
    """
    positive = class_activation_maps(features, weight.clamp(min=0), classes=classes)
    negative = class_activation_maps(features, weight.clamp(max=0), classes=classes)
    return positive, negative


def recombined_cams(features: torch.Tensor, weight: torch.Tensor,
                    classes: ClassSpec) -> torch.Tensor:
    """The recombined CAM of eq. 3: ``sum_k |w_ck| P_k`` (``= M_p + |M_n|`` for ``P >= 0``).

    Args:
        features: ``(N, K, h, w)`` feature maps before pooling.
        weight: ``(C, K)`` classifier weight.
        classes: as :func:`wsolkit.cam.class_activation_maps`.

    Returns:
        Float tensor shaped like the CAM of ``classes``.
    """
    return class_activation_maps(features, weight.abs(), classes=classes)


def softmax_weighted_cams(features: torch.Tensor, weight: torch.Tensor,
                          classes: ClassSpec) -> torch.Tensor:
    """``sum_k w_ck P_k S_k``: the map whose spatial mean is a WGAP network's logit minus bias.

    Args:
        features: ``(N, K, h, w)`` feature maps before pooling.
        weight: ``(C, K)`` classifier weight.
        classes: as :func:`wsolkit.cam.class_activation_maps`.

    Returns:
        Float tensor shaped like the CAM of ``classes``; ``.mean((-2, -1))`` equals
        ``classifier(wgap(features)) - bias`` (``.sum((-2, -1))`` for
        ``wgap(features, divide_by_area=False)``).
    """
    return class_activation_maps(features * spatial_softmax(features), weight, classes=classes)


def recombined_map_fn(model: nn.Module, features: Mapping[str, torch.Tensor],
                      classes: torch.Tensor) -> torch.Tensor:
    """:func:`recombined_cams` of ``features["cam"]``: the score map ``"recombined"``."""
    return recombined_cams(features["cam"], model.classifier.weight, classes)


def softmax_weighted_map_fn(model: nn.Module, features: Mapping[str, torch.Tensor],
                            classes: torch.Tensor) -> torch.Tensor:
    """:func:`softmax_weighted_cams` of ``features["cam"]``: the score map ``"softmax_weighted"``."""
    return softmax_weighted_cams(features["cam"], model.classifier.weight, classes)


def positive_part_map_fn(model: nn.Module, features: Mapping[str, torch.Tensor],
                         classes: torch.Tensor) -> torch.Tensor:
    """``M_p`` of eq. 2 (the channels of positive weight): the score map ``"positive_part"``."""
    return signed_cams(features["cam"], model.classifier.weight, classes)[0]


def negative_part_map_fn(model: nn.Module, features: Mapping[str, torch.Tensor],
                         classes: torch.Tensor) -> torch.Tensor:
    """``|M_n|`` of eq. 2 (the channels of negative weight): the score map ``"negative_part"``."""
    return -signed_cams(features["cam"], model.classifier.weight, classes)[1]


register_method("wgap", build, maps={"recombined": recombined_map_fn,
                                     "softmax_weighted": softmax_weighted_map_fn,
                                     "positive_part": positive_part_map_fn,
                                     "negative_part": negative_part_map_fn})


# --------------------------------------------------------------------------------------------
# Automatic threshold (section 4.3, Fig. 3)
# --------------------------------------------------------------------------------------------


def _check_maps(maps) -> torch.Tensor:
    t = torch.as_tensor(maps)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or not t.is_floating_point():
        raise ThresholdInputError(
            f"maps has shape {tuple(t.shape)} and dtype {t.dtype}; expected (N, H, W) or (H, W) "
            "float score maps (the normalised, upsampled maps of wsolkit.evaluation).")
    if not torch.isfinite(t).all():
        raise ThresholdInputError(
            f"maps hold NaN or inf in {int((~torch.isfinite(t)).flatten(1).any(1).sum())} maps; "
            "normalise them with wsolkit.cam.normalize_maps first.")
    return t.float()


def _check_thresholds(thresholds) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) <= 0) or t[0] < 0 or t[-1] > 1:
        raise ThresholdInputError(
            f"thresholds = {thresholds!r}; expected at least 2 increasing values in [0, 1], "
            "e.g. PAPER_THRESHOLDS (0, 0.05, ..., 1).")
    return t


def boundary_means(maps, thresholds=PAPER_THRESHOLDS) -> tuple[np.ndarray, np.ndarray]:
    """Mean map value on the boundary of the region above each threshold: ``V_l``.

    The region at threshold ``t`` is ``{(i, j): M(i, j) > t * max M}`` (all of it, not only the
    largest component). Its boundary is the set of region pixels with at least one of their 4
    neighbours outside the region or outside the image, so a region touching the image border
    has that stretch of border on its boundary (as an OpenCV contour would).

    Args:
        maps: ``(N, H, W)`` (or ``(H, W)``) float score maps, e.g. in ``[0, 1]``.
        thresholds: ``(T,)`` increasing fractions of each map's maximum.

    Returns:
        ``(V, counts)``: ``(N, T)`` float64 boundary means, NaN where the region is empty, and
        ``(N, T)`` int64 numbers of boundary pixels.
    """
    m = _check_maps(maps)
    t = _check_thresholds(thresholds)
    peak = m.flatten(1).amax(1)[:, None, None]
    means = np.full((m.shape[0], t.size), np.nan)
    counts = np.zeros((m.shape[0], t.size), dtype=np.int64)
    for k, level in enumerate(t):
        region = m > float(level) * peak
        padded = nn.functional.pad(region, (1, 1, 1, 1), value=False)
        interior = (region & padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1]
                    & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:])
        boundary = region & ~interior
        count = boundary.flatten(1).sum(1)
        total = (m * boundary).flatten(1).sum(1, dtype=torch.float64)
        counts[:, k] = count.cpu().numpy()
        nonempty = counts[:, k] > 0
        means[nonempty, k] = (total.cpu().numpy()[nonempty] / counts[nonempty, k])
    return means, counts


def boundary_differences(means: np.ndarray) -> np.ndarray:
    """``D_l = |V_l - V_(l-1)|`` per map: ``(N, T)``, NaN in column 0 and next to empty regions."""
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2:
        raise ThresholdInputError(f"means has shape {means.shape}; expected (N, T).")
    d = np.full_like(means, np.nan)
    d[:, 1:] = np.abs(np.diff(means, axis=1))
    return d


@dataclass
class AutomaticThresholds:
    """What :func:`automatic_thresholds` found for each map.

    Attributes:
        thresholds: ``(N,)`` float64 chosen thresholds, NaN where the rule has no answer.
        index: ``(N,)`` int64 index into ``candidates`` of the choice, -1 where undecided.
        candidates: ``(T,)`` the thresholds tried.
        boundary_means: ``(N, T)`` ``V``, NaN where the region is empty.
        differences: ``(N, T)`` ``D``, NaN where undefined.
        mean_difference: ``(N,)`` the average of each map's defined ``D`` (Fig. 3's blue line).
    """

    thresholds: np.ndarray
    index: np.ndarray
    candidates: np.ndarray
    boundary_means: np.ndarray
    differences: np.ndarray
    mean_difference: np.ndarray

    @property
    def undecided(self) -> int:
        """Number of maps without a choice."""
        return int((self.index < 0).sum())

    def with_fallback(self, fallback: float = 0.2) -> np.ndarray:
        """``(N,)`` the chosen thresholds, ``fallback`` where the rule has no answer (as
        :func:`wsolkit.evaluation.evaluate_image_thresholds` scores such maps)."""
        return np.where(self.index >= 0, self.thresholds, float(fallback))


def automatic_thresholds(maps, rule: str = "first_above_mean",
                         thresholds=PAPER_THRESHOLDS) -> AutomaticThresholds:
    """The per-image threshold of section 4.3 (Fig. 3).

    For each map, ``V`` and ``D`` over ``thresholds`` (:func:`boundary_means`,
    :func:`boundary_differences`); ``D`` is defined from the second threshold on, wherever both
    regions are non-empty (``t = 1`` never is: nothing exceeds the maximum), and ``mean D`` is
    the average of the defined values. The rule picks ``thresholds[l]`` for an ``l`` where
    ``D_l`` is defined:

    * ``"first_above_mean"`` (default): the smallest ``l`` with ``D_l > mean D``. The paper's
      observation is that the box only changes where ``D`` clearly exceeds its average, and its
      goal is to stop the box from shrinking to the most discriminative part; the first such
      change from the low end is the largest box with a real boundary behind it.
    * ``"largest"``: the ``l`` of the largest ``D`` (first of equal values), the paper's first
      attempt, which it reports to localize like plain CAM.
    * ``"last_above_mean"``: the largest ``l`` with ``D_l > mean D``.

    A map has no answer (threshold NaN, index -1) when fewer than two thresholds give a
    non-empty region, or (above-mean rules) when no ``D`` exceeds its mean, i.e. all are equal.

    Args:
        maps: ``(N, H, W)`` or ``(H, W)`` float score maps (normalised and upsampled).
        rule: one of :data:`RULES`.
        thresholds: ``(T,)`` candidate thresholds; default :data:`PAPER_THRESHOLDS`.

    Returns:
        :class:`AutomaticThresholds`.

    Raises:
        ThresholdInputError: bad maps, thresholds or rule.
    """
    if rule not in RULES:
        raise ThresholdInputError(f"rule = {rule!r}; expected one of {RULES}.")
    candidates = _check_thresholds(thresholds)
    means, _ = boundary_means(maps, candidates)
    diffs = boundary_differences(means)
    defined = ~np.isnan(diffs)
    counted = defined.sum(1)
    mean_d = np.where(counted > 0, np.where(defined, diffs, 0.0).sum(1) / np.maximum(counted, 1),
                      np.nan)
    n, t = diffs.shape
    index = np.full(n, -1, dtype=np.int64)
    if rule == "largest":
        has = counted > 0
        index[has] = np.argmax(np.where(defined, diffs, -np.inf), axis=1)[has]
    else:
        above = defined & (np.where(defined, diffs, -np.inf) > mean_d[:, None])
        has = above.any(1)
        if rule == "first_above_mean":
            chosen = np.argmax(above, axis=1)
        else:
            chosen = t - 1 - np.argmax(above[:, ::-1], axis=1)
        index[has] = chosen[has]
    chosen_t = np.where(index >= 0, candidates[np.maximum(index, 0)], np.nan)
    return AutomaticThresholds(chosen_t, index, candidates, means, diffs, mean_d)


def threshold_chooser(rule: str = "first_above_mean", thresholds=PAPER_THRESHOLDS):
    """``maps -> (N,) thresholds`` (NaN where undecided) for
    :func:`wsolkit.evaluation.evaluate_image_thresholds`."""
    if rule not in RULES:
        raise ThresholdInputError(f"rule = {rule!r}; expected one of {RULES}.")

    def choose(maps) -> np.ndarray:
        return automatic_thresholds(maps, rule, thresholds).thresholds

    return choose


# --------------------------------------------------------------------------------------------
# Figures (Fig. 2 and Fig. 3 of the paper)
# --------------------------------------------------------------------------------------------


def plot_signed_parts(images, gt_boxes, maps: Mapping[str, torch.Tensor], *,
                      title: str | None = None, panel: float = 1.6):
    """Fig. 2: each image beside its maps (for instance ``M_p``, ``|M_n|``, the CAM and the
    recombined CAM), each normalised on its own, ground truth in red.

    Args:
        images: ``N`` images ``(3, H, W)``.
        gt_boxes: ``N`` arrays ``(G_i, 4)``.
        maps: ``{column title: (N, H, W) maps in [0, 1]}``.
        title: the figure's title.
        panel: inches per panel.

    Returns:
        The ``Figure`` (not shown): one row per image, the image first.
    """
    from wsolkit import viz

    fig, axes = viz.small_multiples(len(images), len(maps) + 1, panel=panel)
    for row, image in enumerate(images):
        first = row == 0
        viz.show_localization(axes[row, 0], image, gt_boxes=gt_boxes[row],
                              title="image" if first else None)
        for col, (name, stack) in enumerate(maps.items(), start=1):
            viz.show_localization(axes[row, col], image, score_map=stack[row],
                                  gt_boxes=gt_boxes[row], alpha=0.6,
                                  title=name if first else None)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_threshold_selection(image, score_map, gt_boxes, *, rules: Sequence[str] = RULES,
                             rule: str = "first_above_mean", fallback: float = 0.2):
    """Fig. 3 for one map: ``D`` and ``V`` over the candidate thresholds, the average of
    ``D`` (the paper's blue line), each reading's choice, and the boxes at ``fallback`` (dashed)
    and at ``rule``'s threshold.

    Args:
        image: ``(3, H, W)``.
        score_map: ``(H, W)`` map in ``[0, 1]``.
        gt_boxes: ``(G, 4)`` ground truth.
        rules: the readings marked on the curve.
        rule: the reading whose box is drawn.
        fallback: the fixed threshold drawn for comparison (and used where ``rule`` has none).

    Returns:
        The ``Figure`` (not shown).
    """
    import matplotlib.pyplot as plt

    from wsolkit import viz
    from wsolkit.boxes import box_iou, boxes_at_threshold

    values = np.asarray(score_map, dtype=np.float64)
    found = {r: automatic_thresholds(values, r) for r in dict.fromkeys([*rules, rule])}
    chosen = found[rule]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2),
                             gridspec_kw={"width_ratios": [1, 1.8, 1.3]})
    viz.show_localization(axes[0], image, score_map=values, title="map")
    twin = axes[1].twinx()
    twin.plot(chosen.candidates, chosen.boundary_means[0], ":", color="grey")
    twin.set_ylabel("V, boundary mean (dotted)", fontsize=8, color="grey")
    twin.grid(False)
    axes[1].plot(chosen.candidates, chosen.differences[0], "o-", color="#d62728",
                 markersize=3, label="D")
    axes[1].axhline(chosen.mean_difference[0], color="#1f77b4", label="mean of D")
    for marker, (name, result) in zip("vs^*Dx", found.items()):
        if result.index[0] >= 0 and name in rules:
            axes[1].plot(result.thresholds[0], result.differences[0, result.index[0]], marker,
                         color="black", markersize=8, fillstyle="none", label=name)
    axes[1].set_xlabel("threshold (fraction of the maximum)")
    axes[1].set_xlim(0, 1)
    axes[1].legend(fontsize=7)
    automatic = float(chosen.with_fallback(fallback)[0])
    boxes = {t: boxes_at_threshold(values, t)[0] for t in (fallback, automatic)}
    iou = {t: float(box_iou(box[None], np.asarray(gt_boxes)).max()) for t, box in boxes.items()}
    viz.show_localization(axes[2], image, gt_boxes=gt_boxes, pred_boxes=[boxes[automatic]])
    viz.draw_box(axes[2], boxes[fallback], "#ff7f0e", linestyle="--")
    axes[2].set_title(f"{fallback:g} (dashed): IoU {iou[fallback]:.2f}\n{rule} {automatic:.2f}: "
                      f"IoU {iou[automatic]:.2f}", fontsize=9)
    fig.tight_layout()
    return fig
