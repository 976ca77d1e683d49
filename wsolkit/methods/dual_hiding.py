"""Attention-based dual hiding, AMH (Zhang, MASc thesis 2021, chapter 4, eqs. 13-14).

A training-only plug-in for a feature map ``F`` (``(N, K, h, w)``) that hides, besides the most
discriminative cells of the self-attention map, an *area* around two expected points, since a
convolutional feature cell shares its information with its neighbours:

1. spatial softmax per channel (eq. 13): ``S_k(i, j) = exp F_k(i, j) / sum_(i', j') exp F_k``;
2. one weight per channel (eq. 14) and the top-1 channel; its expected point by spatial
   soft-argmax (Finn et al. 2016): ``(sum_ij S_k(i, j) i, sum_ij S_k(i, j) j)``;
3. the same expected point for the self-attention map ``A`` (the channel mean, eq. 10);
4. a square of ``hide_side`` times the map's side, centred on each expected point, is hidden
   (the area hiding of Fig. 20);
5. the final mask multiplies the two area masks with the thresholded self-attention mask
   ``M_drop1 = 1[A < drop max A]`` (0.8 for VGG, 0.9 for ResNet50);
6. chapter 3's selection strategy decides per image (:mod:`wsolkit.methods.selection`): this
   mask replaces ``M_drop1`` in its ``"hidden"`` branch; dispersed maps get the combined mask of
   chapter 3 and small objects pass unchanged.

What the thesis leaves open, and the readings used here:

* Eq. 13 prints the softmax denominator without the exponential (as eq. 18 of chapter 5); the
  standard spatial softmax is used, as the text ("probability distribution") says.
* Eq. 14 averages the *distributions* ``S_k``; every distribution sums to 1, so eq. 14 read
  literally gives ``1 / (h w)`` for every channel and cannot rank them. The channel weight here
  is the softmax-weighted mean ``sum_ij S_k F_k`` (``channel_score="weighted"``, the WGAP of
  chapter 5, eq. 19, the same sum with the features put back); ``"mean"`` ranks channels by
  their plain average.
* The size of the hidden area is not given: ``hide_side`` (default 0.25 of the map's side,
  at least one cell) is swept in the chapter.
* "Top-2" (Table 8): ``channel_points = 2`` takes the expected points of the two highest
  channels; ``spatial_points = 2`` takes a second expected point of ``A`` after the first area
  is removed from it.

In a configuration: ``TrainConfig(method={"amh": {"positions": ["pool2", "pool3", "block4"],
"reference_sides": {...}}})``; ``masks`` chooses the parts of Table 8's ablation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from wsolkit.methods.improving_cam import spatial_softmax
from wsolkit.methods.registry import MethodError, MethodParts, register_method
from wsolkit.methods.selection import (
    BRANCHES, PAPER_SETTINGS, AttentionSelection, SelectionSettings, _reference_sides,
    branch_share_term, drop_mask, selection_masks, self_attention, settings_from,
)

__all__ = [
    "CHANNEL_SCORES",
    "PAPER_TABLES",
    "DualHiding",
    "area_mask",
    "channel_scores",
    "dual_hiding_mask",
    "expected_points",
    "soft_argmax",
]

#: How a channel is weighted (see the module docstring).
CHANNEL_SCORES = ("weighted", "mean")

#: The thesis' tables of chapter 4 (top-1 cls err, top-1 loc err; Table 9: GT-known loc err),
#: every row as printed ("Table 5" CUB, "Table 6" ILSVRC; the text calls them Tables 7 and 8).
PAPER_TABLES = {
    "Table 5": {"VGGnet-CAM": (23.86, 66.05), "VGGnet-ACoL": (28.10, 54.08),
                "VGGnet-SPG": (24.50, 50.00), "VGGnet-ADL": (34.73, 47.64),
                "VGGnet-DANet": (24.60, 47.48), "VGGnet-Cutmix": (None, 47.47),
                "VGGnet-AMH": (26.46, 43.16), "ResNet50-CAM": (21.51, 58.83),
                "ResNet50-ADL": (24.68, 48.09), "ResNet50-Cutmix": (None, 45.2),
                "ResNet50-AMH": (25.17, 44.47)},
    "Table 6": {"VGGnet-CAM": (33.40, 57.20), "VGGnet-ACoL": (32.50, 54.17),
                "VGGnet-ADL": (30.52, 55.08), "VGGnet-Cutmix": (None, 56.55),
                "VGGnet-AMH": (31.47, 53.15), "ResNet50-CAM": (23.94, 54.65),
                "ResNet50-AMH": (22.07, 51.84)},
    "Table 7": {"N/A (CAM)": (23.86, 66.05), "conv 5-3": (23.95, 52.19),
                "+ pool4": (24.12, 46.31), "+ pool3": (26.46, 43.16),
                "+ pool2": (27.08, 45.07), "+ pool1": (29.30, 47.81)},
    "Table 8": {"N/A (CAM)": (23.86, 66.05), "drop mask of self-attention": (24.13, 45.04),
                "+ Top-1 spatial region": (24.25, 44.47),
                "+ Top-1 channel region": (26.46, 43.16),
                "+ Top-2 spatial region": (26.86, 44.94),
                "+ Top-2 channel region": (27.15, 46.80)},
    "Table 9": {"VGGnet-CAM": (36.77,), "VGGnet-ADL": (30.64,), "VGGnet-AMH": (25.23,)},
}


def soft_argmax(probabilities: torch.Tensor) -> torch.Tensor:
    """Expected cell of each distribution: ``(N, K, h, w) -> (N, K, 2)`` float ``(row, col)``.

    Args:
        probabilities: maps that each sum to 1 (a spatial softmax).
    """
    n, k, h, w = probabilities.shape
    rows = torch.arange(h, device=probabilities.device, dtype=probabilities.dtype)
    cols = torch.arange(w, device=probabilities.device, dtype=probabilities.dtype)
    row = (probabilities.sum(3) * rows).sum(2)
    col = (probabilities.sum(2) * cols).sum(2)
    return torch.stack([row, col], dim=-1)


def channel_scores(features: torch.Tensor, how: str = "weighted") -> torch.Tensor:
    """One weight per channel: ``(N, K, h, w) -> (N, K)``.

    ``"weighted"``: ``sum_ij S_k F_k``, the softmax-weighted mean; ``"mean"``: the plain mean.
    """
    if how not in CHANNEL_SCORES:
        raise MethodError(f"AMH: channel_score = {how!r}; expected one of {CHANNEL_SCORES}.")
    if how == "mean":
        return features.mean(dim=(2, 3))
    return (features * spatial_softmax(features)).sum(dim=(2, 3))


def area_mask(points: torch.Tensor, size: tuple[int, int], side: int) -> torch.Tensor:
    """Ones with a ``side`` x ``side`` square of zeros around each point.

    Args:
        points: ``(N, P, 2)`` float ``(row, col)`` cell coordinates.
        size: ``(h, w)`` of the map.
        side: the square's side in cells; of all such squares, the one whose centre is nearest
            the point (ties towards larger coordinates), clipped at the map's edges.

    Returns:
        ``(N, 1, h, w)`` float32 of 0 and 1.
    """
    h, w = size
    rows = torch.arange(h, device=points.device, dtype=torch.float32).view(1, 1, h, 1)
    cols = torch.arange(w, device=points.device, dtype=torch.float32).view(1, 1, 1, w)
    # First row and column of the square whose centre is nearest the point (halves up).
    start = torch.floor(points.float() - (side - 1) / 2 + 0.5)
    r0, c0 = start[..., 0, None, None], start[..., 1, None, None]
    inside = (rows >= r0) & (rows < r0 + side) & (cols >= c0) & (cols < c0 + side)
    return (~inside.any(dim=1, keepdim=True)).float()


def expected_points(features: torch.Tensor, *, channel_points: int = 1, spatial_points: int = 1,
                    side: int = 1, channel_score: str = "weighted") -> dict[str, torch.Tensor]:
    """The expected points AMH hides around.

    Returns:
        ``{"channel": (N, channel_points, 2), "spatial": (N, spatial_points, 2)}`` float
        ``(row, col)``: the soft-argmax of the top channels' softmax, and of the self-attention
        map's, each further spatial point after the previous areas are removed.
    """
    n, k, h, w = features.shape
    out = {}
    if channel_points:
        top = channel_scores(features, channel_score).topk(min(channel_points, k), dim=1).indices
        chosen = torch.gather(features, 1, top[:, :, None, None].expand(-1, -1, h, w))
        out["channel"] = soft_argmax(spatial_softmax(chosen.float()))
    if spatial_points:
        attention = self_attention(features).float()
        found = []
        for _ in range(spatial_points):
            point = soft_argmax(spatial_softmax(attention))
            found.append(point)
            removed = area_mask(point, (h, w), side) == 0
            attention = attention.masked_fill(removed, float("-inf"))
        out["spatial"] = torch.cat(found, dim=1)
    return out


def dual_hiding_mask(features: torch.Tensor, *, drop: float = 0.8, hide_side: float = 0.25,
                     channel_points: int = 1, spatial_points: int = 1,
                     channel_score: str = "weighted", attention_mask: bool = True) -> torch.Tensor:
    """The final drop mask of section 4.2: ``(N, K, h, w) -> (N, 1, h, w)`` in features' dtype.

    Args:
        features: the feature maps.
        drop: ``M_drop1``'s threshold (0.8 VGG, 0.9 ResNet50).
        hide_side: the side of each hidden square, a fraction of the map's shorter side.
        channel_points, spatial_points: expected points of the top channels and of ``A``.
        channel_score: see :func:`channel_scores`.
        attention_mask: include ``M_drop1``.
    """
    h, w = features.shape[-2:]
    side = max(1, round(hide_side * min(h, w)))
    mask = torch.ones((features.shape[0], 1, h, w), device=features.device)
    if attention_mask:
        mask = mask * drop_mask(self_attention(features).float(), drop, "above")
    points = expected_points(features, channel_points=channel_points,
                             spatial_points=spatial_points, side=side, channel_score=channel_score)
    for found in points.values():
        mask = mask * area_mask(found, (h, w), side)
    return mask.to(features.dtype)


class DualHiding(AttentionSelection):
    """AMH as a plug-in: ``(N, K, h, w) -> (N, K, h, w)``, the identity at evaluation.

    Args:
        settings: chapter 3's selection thresholds (``settings.drop`` is ``M_drop1``'s).
        reference_side: see :class:`wsolkit.methods.selection.AttentionSelection`.
        hide_side, channel_points, spatial_points, channel_score, attention_mask: see
            :func:`dual_hiding_mask`.
        select: ``False`` applies the dual mask to every image (no selection strategy).

    Attributes:
        branch_counts: as :class:`~wsolkit.methods.selection.AttentionSelection`, whose
            training-only forward pass it shares.
    """

    def __init__(self, settings: SelectionSettings = PAPER_SETTINGS,
                 reference_side: int | None = None, *, hide_side: float = 0.25,
                 channel_points: int = 1, spatial_points: int = 1,
                 channel_score: str = "weighted", attention_mask: bool = True,
                 select: bool = True) -> None:
        super().__init__(settings, reference_side)
        if not 0 < hide_side <= 1:
            raise MethodError(f"AMH: hide_side = {hide_side!r}; expected a fraction in (0, 1].")
        for name, value in (("channel_points", channel_points), ("spatial_points", spatial_points)):
            if not isinstance(value, int) or value < 0:
                raise MethodError(f"AMH: {name} = {value!r}; expected an int >= 0.")
        if channel_score not in CHANNEL_SCORES:
            raise MethodError(f"AMH: channel_score = {channel_score!r}; expected one of "
                              f"{CHANNEL_SCORES}.")
        self.select = bool(select)
        self.mask_options = dict(drop=settings.drop, hide_side=float(hide_side),
                                 channel_points=channel_points, spatial_points=spatial_points,
                                 channel_score=channel_score, attention_mask=bool(attention_mask))

    def masks(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masks, branches)`` for a batch (what training multiplies the features with)."""
        hidden = dual_hiding_mask(features, **self.mask_options)
        if not self.select:
            branches = torch.full((features.shape[0],), BRANCHES.index("hidden"),
                                  device=features.device, dtype=torch.int64)
            return hidden, branches
        return selection_masks(features, self.settings, hidden_mask=hidden,
                               dispersion_scale=self.dispersion_scale(*features.shape[-2:]))

    def extra_repr(self) -> str:
        return f"select={self.select}, reference_side={self.reference_side}, {self.mask_options}"


def build(model: nn.Module, config, positions: str | Sequence[str],
          reference_sides: Mapping[str, int] | None = None, hide_side: float = 0.25,
          channel_points: int = 1, spatial_points: int = 1, channel_score: str = "weighted",
          attention_mask: bool = True, select: bool = True, **thresholds) -> MethodParts:
    """A :class:`DualHiding` after each of ``positions``; the branch shares are logged (term
    ``"amh"``). ``thresholds``: fields of :class:`~wsolkit.methods.selection.SelectionSettings`
    (``drop=0.9`` for ResNet50)."""
    if isinstance(positions, str):
        positions = [positions]
    settings = settings_from(thresholds)
    sides = _reference_sides(positions, reference_sides)
    plugins = {pos: DualHiding(settings, sides[pos], hide_side=hide_side,
                               channel_points=channel_points, spatial_points=spatial_points,
                               channel_score=channel_score, attention_mask=attention_mask,
                               select=select)
               for pos in positions}
    return MethodParts(plugins=plugins, losses={"amh": branch_share_term(plugins, "amh")})


register_method("amh", build)
