"""Attention-based selection strategy, ASS (Zhang, MASc thesis 2021, chapter 3; ICPR 2020).

A parameter-free plug-in for a feature map ``F`` (``(N, K, h, w)``), active in training only,
that decides *per image* whether to hide anything (Algorithm 1):

1. self-attention, the channel mean (eq. 10): ``A = mean_k F[:, k]``;
2. drop masks by thresholding ``A`` at fractions of its maximum (eq. 11):
   ``M_drop1 = 1[A < 0.8 max A]`` hides the most discriminative cells, ``1[A >= 0.3 max A]`` is
   the estimated object area, and ``M_drop2 = 1[A >= 0.2 max A]`` hides the background (0 below);
3. the dispersion of the most activated cells (those ``M_drop1`` hides; eq. 12)::

       D = mu1 (Var X + Var Y) + mu2 P

   with ``X``, ``Y`` their column and row coordinates (population variance, in cells) and ``P``
   the number of their 8-connected components ("discrete points");
4. the branch (Algorithm 1, in this order):

   * ``"dispersed"``: ``D >= dispersion threshold`` (and at least ``min_points`` activated
     cells): the most activated cells are scattered, so they are not the object; the combined
     mask ``M_drop1 * M_drop2`` hides them and the background;
   * ``"passed"``: a small object (the estimated area is below 20 % of the map) or a most
     activated region covering more than 30 % of the estimated area: all ones, ``F`` unchanged;
   * ``"hidden"``: every other image: ``M_drop1``, as ADL's drop mask.

At evaluation the layer is the identity, so the score map is the plain CAM.

What the thesis leaves open, and the readings used here (the chapter measures the alternatives):

* ``mu1`` and ``mu2`` are never given: ``mu1 = 1, mu2 = 0`` (the variance alone), so the printed
  threshold 40 is a variance in cells. ``P`` is implemented for ``mu2 > 0``.
* Condition (1), "a certain number of activated pixels", has no number: ``min_points = 2``
  (one cell has no spread).
* The background threshold is 0.1 in section 3.2 and 0.2 in section 3.3.1, the "optimal
  setting"; 0.2 is the default.
* The threshold 40 is a variance in cells of the map it is applied to (28 x 28 after pool3 and
  14 x 14 after pool4 and conv5-3 of VGG16 at 224 px). The variance of coordinates scales with the
  square of the map's side, so on another map size it is scaled by ``(h w) / s**2`` with ``s``
  the side of VGG's map at the matched position (``reference_sides``); 40 is out of reach on
  14 x 14 maps (cells spread uniformly over the map have variance 32.5), so in the thesis'
  setting the dispersed branch can only fire at pool3, which fits its remark that combined masks
  are "mostly" used in low-level layers.
* An image whose attention map is constant (all cells equal, e.g. all zero) has no
  discriminative region: it passes unchanged (the printed rules would hide everything).

Every forward pass in training records how many images took each branch
(:attr:`AttentionSelection.branch_counts`); the zero-weight loss term :func:`branch_share_term`
logs these as per-epoch shares in the run's ``log.jsonl`` (``"ass/<position>/<branch>"``).

In a configuration: ``TrainConfig(method={"ass": {"positions": ["pool2", "pool3", "block4"],
"reference_sides": {"pool2": 28, "pool3": 14, "block4": 14}}})``; ``strategy="always_drop"``
applies ``M_drop1`` to every image (the thesis' "CAM + M_drop1" row of Table 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from wsolkit.methods.registry import LossTerm, MethodError, MethodParts, register_method

__all__ = [
    "BACKBONE_POSITIONS",
    "BRANCHES",
    "PLUG_ROWS",
    "VGG16_SIDES",
    "PAPER_SETTINGS",
    "PAPER_TABLES",
    "STRATEGIES",
    "AttentionSelection",
    "SelectionSettings",
    "branch_share_term",
    "branch_shares",
    "count_components",
    "plot_attention_masks",
    "plug_options",
    "plug_positions",
    "dispersion",
    "drop_mask",
    "select_branches",
    "selection_masks",
    "self_attention",
]

#: Algorithm 1's outcomes, in the order it tests them.
BRANCHES = ("dispersed", "passed", "hidden")
#: ``"select"``: Algorithm 1; ``"always_drop"``: ``M_drop1`` on every image (Table 2).
STRATEGIES = ("select", "always_drop")

#: The thesis' CUB tables of chapter 3 (top-1 cls err, top-1 loc err), every row as printed.
#: "Table 3" and "Table 4" are the comparisons the text calls Tables 7 and 8.
PAPER_TABLES = {
    "Table 1": {"N/A (CAM)": (23.86, 66.05), "conv 5-3": (23.97, 51.65),
                "+ pool4": (24.82, 50.00), "+ pool3": (25.51, 45.45),
                "+ pool2": (26.79, 47.51), "+ pool1": (26.92, 47.24)},
    "Table 2": {"CAM": (23.86, 66.05), "CAM + M_drop1": (42.63, 55.89),
                "ASS": (25.51, 45.45)},
    "Table 3": {"VGGnet-CAM": (23.86, 66.05), "VGGnet-ACoL": (28.10, 54.08),
                "VGGnet-SPG": (24.50, 50.00), "VGGnet-ADL": (34.73, 47.64),
                "VGGnet-DANet": (24.60, 47.48), "VGGnet-Cutmix": (None, 47.47),
                "VGGnet-ASS": (25.51, 45.45)},
    "Table 4": {"VGGnet-CAM": (33.40, 57.20), "VGGnet-ACoL": (32.50, 54.17),
                "VGGnet-ADL": (30.52, 55.08), "VGGnet-Cutmix": (None, 56.55),
                "VGGnet-ASS": (30.59, 53.76)},
}


#: Tables 1 and 7: the VGG16 positions the module is plugged at, added one by one.
PLUG_ROWS = {"conv 5-3": ("conv5_3",), "+ pool4": ("pool4", "conv5_3"),
             "+ pool3": ("pool3", "pool4", "conv5_3"),
             "+ pool2": ("pool2", "pool3", "pool4", "conv5_3"),
             "+ pool1": ("pool1", "pool2", "pool3", "pool4", "conv5_3")}
#: The side of VGG16-GAP's map at each position for 224 px inputs (section 3.3.1).
VGG16_SIDES = {"pool1": 112, "pool2": 56, "pool3": 28, "pool4": 14, "conv5_3": 14}
#: Where each VGG16 position sits in other backbones: the same order, and for simple_gap the
#: same size relative to the last map (pool3 twice its side, pool4 equal, pool2 four times...).
#: ResNet50-GAP: after the stage of the same stride (the thesis does not say where it plugs).
BACKBONE_POSITIONS = {
    "vgg16_gap": {p: p for p in VGG16_SIDES},
    "simple_gap": {"pool1": "block1", "pool2": "pool1", "pool3": "pool2", "pool4": "pool3",
                   "conv5_3": "block4"},
    "resnet50_gap": {"pool1": "stem", "pool2": "layer1", "pool3": "layer2", "pool4": "layer3",
                     "conv5_3": "layer4"},
}


def plug_positions(vgg_positions: Sequence[str], backbone: str
                   ) -> tuple[list[str], dict[str, int] | None]:
    """The backbone's positions for the thesis' VGG16 positions, and the ``reference_sides``
    that scale the dispersion threshold to them (``None`` for VGG16 itself: as printed).

    Raises:
        MethodError: a backbone or a position without a known equivalent.
    """
    if backbone not in BACKBONE_POSITIONS:
        raise MethodError(f"no VGG16 position equivalents for backbone {backbone!r}; known: "
                          f"{sorted(BACKBONE_POSITIONS)}.")
    table = BACKBONE_POSITIONS[backbone]
    unknown = sorted(set(vgg_positions) - set(table))
    if unknown:
        raise MethodError(f"unknown VGG16 position(s) {unknown}; expected some of "
                          f"{list(VGG16_SIDES)}.")
    positions = [table[p] for p in vgg_positions]
    if backbone == "vgg16_gap":
        return positions, None
    return positions, {table[p]: VGG16_SIDES[p] for p in vgg_positions}


def plug_options(method: str, backbone: str, vgg_rows: str = "+ pool3", **options) -> dict:
    """``TrainConfig.method`` for ASS or AMH (``method``: ``"ass"`` or ``"amh"``) plugged at
    the positions of one row of Tables 1 and 7 (:data:`PLUG_ROWS`), mapped to ``backbone`` with
    the dispersion threshold scaled to its maps (:func:`plug_positions`); ``options``: the
    method's other options."""
    if vgg_rows not in PLUG_ROWS:
        raise MethodError(f"unknown plug row {vgg_rows!r}; expected one of {list(PLUG_ROWS)}.")
    positions, sides = plug_positions(PLUG_ROWS[vgg_rows], backbone)
    return {method: {"positions": positions, "reference_sides": sides, **options}}


@dataclass(frozen=True)
class SelectionSettings:
    """The thresholds of Algorithm 1 (section 3.3.1); see the module docstring.

    Attributes:
        drop: ``M_drop1`` hides cells at or above ``drop * max A`` (0.8).
        area: the estimated object is the cells at or above ``area * max A`` (0.3).
        background: ``M_drop2`` hides cells below ``background * max A`` (0.2; 0.1 in 3.2).
        small_area: an object below this share of the map is small (0.2).
        drop_share: a most activated region above this share of the object passes (0.3).
        dispersion_threshold: ``D`` at or above it selects the dispersed branch (40).
        mu1, mu2: the weights of eq. 12 (not given in the thesis; 1 and 0 here).
        min_points: activated cells the dispersed branch needs at least (condition 1).
    """

    drop: float = 0.8
    area: float = 0.3
    background: float = 0.2
    small_area: float = 0.2
    drop_share: float = 0.3
    dispersion_threshold: float = 40.0
    mu1: float = 1.0
    mu2: float = 0.0
    min_points: int = 2

    def __post_init__(self) -> None:
        for name in ("drop", "area", "background", "small_area", "drop_share"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise MethodError(f"ASS: {name} = {value!r}; expected a fraction in [0, 1].")
        for name in ("dispersion_threshold", "mu1", "mu2"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise MethodError(f"ASS: {name} = {value!r}; expected a number >= 0.")
        if not isinstance(self.min_points, int) or self.min_points < 1:
            raise MethodError(f"ASS: min_points = {self.min_points!r}; expected an int >= 1.")


#: The thesis' settings (section 3.3.1).
PAPER_SETTINGS = SelectionSettings()


def self_attention(features: torch.Tensor) -> torch.Tensor:
    """Eq. 10: the channel mean, ``(N, K, h, w) -> (N, 1, h, w)``."""
    if features.ndim != 4:
        raise ValueError(f"self_attention: features has shape {tuple(features.shape)}; "
                         "expected (N, K, h, w).")
    return features.mean(dim=1, keepdim=True)


def drop_mask(attention: torch.Tensor, alpha: float, hide: str = "above") -> torch.Tensor:
    """Eq. 11: a mask of ones with the cells on one side of ``alpha * max A`` set to zero.

    Args:
        attention: ``(N, 1, h, w)`` self-attention maps.
        alpha: the threshold as a fraction of each map's maximum.
        hide: ``"above"`` zeroes the cells at or above the threshold (``M_drop1``);
            ``"below"`` zeroes those strictly below it (the background mask ``M_drop2``).

    Returns:
        ``(N, 1, h, w)`` in ``attention.dtype``, values 0 and 1.
    """
    if hide not in ("above", "below"):
        raise ValueError(f"drop_mask: hide = {hide!r}; expected 'above' or 'below'.")
    threshold = alpha * attention.amax(dim=(2, 3), keepdim=True)
    keep = attention < threshold if hide == "above" else attention >= threshold
    return keep.to(attention.dtype)


def count_components(cells: torch.Tensor) -> torch.Tensor:
    """Number of 8-connected components of each boolean map: ``(N, h, w) -> (N,)`` int64.

    Label propagation on the device (each cell takes the largest label among its 8 neighbours
    until nothing changes), so it needs no transfer to the host per layer.
    """
    n, h, w = cells.shape
    on = cells.bool()
    index = torch.arange(1, h * w + 1, device=cells.device, dtype=torch.float32).view(1, 1, h, w)
    labels = torch.where(on[:, None], index.expand(n, 1, h, w), torch.zeros((), device=cells.device))
    for _ in range(h * w):
        grown = F.max_pool2d(labels, 3, stride=1, padding=1)
        grown = torch.where(on[:, None], grown, torch.zeros((), device=cells.device))
        if torch.equal(grown, labels):
            break
        labels = grown
    # A component's cells all end with its largest initial label, found at that cell itself.
    roots = on[:, None] & (labels == index)
    return roots.flatten(1).sum(1)


def dispersion(activated: torch.Tensor, mu1: float = 1.0, mu2: float = 0.0) -> torch.Tensor:
    """Eq. 12: ``mu1 (Var X + Var Y) + mu2 P`` of the activated cells of each map.

    Args:
        activated: ``(N, h, w)`` bool, the cells ``M_drop1`` hides.
        mu1, mu2: the weights of the spread and of the number of components ``P``.

    Returns:
        ``(N,)`` float32; 0 for a map with fewer than one activated cell. Coordinates are cell
        indices (row ``Y``, column ``X``); variances are population variances.
    """
    n, h, w = activated.shape
    on = activated.float()
    count = on.flatten(1).sum(1)
    ys = torch.arange(h, device=on.device, dtype=torch.float32).view(1, h, 1)
    xs = torch.arange(w, device=on.device, dtype=torch.float32).view(1, 1, w)
    safe = count.clamp(min=1)

    def variance(coord: torch.Tensor) -> torch.Tensor:
        mean = (on * coord).flatten(1).sum(1) / safe
        return (on * coord ** 2).flatten(1).sum(1) / safe - mean ** 2

    spread = (variance(xs) + variance(ys)).clamp(min=0)
    value = mu1 * spread
    if mu2:
        value = value + mu2 * count_components(activated).float()
    return torch.where(count > 0, value, torch.zeros_like(value))


def select_branches(attention: torch.Tensor, settings: SelectionSettings = PAPER_SETTINGS,
                    dispersion_scale: float = 1.0) -> torch.Tensor:
    """Algorithm 1's branch for every image: ``(N, 1, h, w) -> (N,)`` int64 indices into
    :data:`BRANCHES`.

    Args:
        attention: self-attention maps (eq. 10).
        settings: the thresholds.
        dispersion_scale: multiplies ``settings.dispersion_threshold`` (the map-size scaling of
            :class:`AttentionSelection`).
    """
    a = attention.detach().float()
    top = a.amax(dim=(2, 3), keepdim=True)
    activated = (a >= settings.drop * top)[:, 0]
    estimated = (a >= settings.area * top)[:, 0]
    cells = a.shape[-2] * a.shape[-1]
    n_active = activated.flatten(1).sum(1)
    n_object = estimated.flatten(1).sum(1).clamp(min=1)
    spread = dispersion(activated, settings.mu1, settings.mu2)
    constant = a.amax(dim=(1, 2, 3)) <= a.amin(dim=(1, 2, 3))
    dispersed = (spread >= settings.dispersion_threshold * dispersion_scale) & (
        n_active >= settings.min_points)
    passed = (n_object < settings.small_area * cells) | (n_active > settings.drop_share * n_object)
    branch = torch.full_like(n_active, BRANCHES.index("hidden"))
    branch = torch.where(passed, BRANCHES.index("passed"), branch)
    branch = torch.where(dispersed, BRANCHES.index("dispersed"), branch)
    return torch.where(constant, BRANCHES.index("passed"), branch)


def selection_masks(features: torch.Tensor, settings: SelectionSettings = PAPER_SETTINGS, *,
                    dispersion_scale: float = 1.0, hidden_mask: torch.Tensor | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The mask Algorithm 1 multiplies each feature map with, and the branch taken.

    Args:
        features: ``(N, K, h, w)``.
        settings: the thresholds.
        dispersion_scale: see :func:`select_branches`.
        hidden_mask: ``(N, 1, h, w)`` mask for the ``"hidden"`` branch; default ``M_drop1``
            (the dual hiding of chapter 4 passes its own).

    Returns:
        ``(masks, branches)``: ``(N, 1, h, w)`` in ``features.dtype`` and ``(N,)`` int64.
    """
    attention = self_attention(features)
    drop1 = drop_mask(attention, settings.drop, "above")
    background = drop_mask(attention, settings.background, "below")
    branches = select_branches(attention, settings, dispersion_scale)
    hidden = drop1 if hidden_mask is None else hidden_mask.to(features.dtype)
    choice = branches.view(-1, 1, 1, 1)
    masks = torch.where(choice == BRANCHES.index("dispersed"), drop1 * background,
                        torch.where(choice == BRANCHES.index("passed"),
                                    torch.ones_like(drop1), hidden))
    return masks, branches


class AttentionSelection(nn.Module):
    """ASS as a plug-in: ``(N, K, h, w) -> (N, K, h, w)``, the identity at evaluation.

    Args:
        settings: the thresholds (:class:`SelectionSettings`).
        reference_side: the side (cells) of the map the dispersion threshold was set for; the
            threshold is scaled by ``h w / reference_side**2``. ``None``: used as given.
        strategy: one of :data:`STRATEGIES`.

    Attributes:
        branch_counts: ``(3,)`` int64, images per branch in the last training forward pass
            (``None`` before the first one). Not part of the state dict.
    """

    def __init__(self, settings: SelectionSettings = PAPER_SETTINGS,
                 reference_side: int | None = None, strategy: str = "select") -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise MethodError(f"ASS: strategy = {strategy!r}; expected one of {STRATEGIES}.")
        if reference_side is not None and (not isinstance(reference_side, int)
                                           or reference_side < 1):
            raise MethodError(f"reference side = {reference_side!r}; expected an int >= 1.")
        self.settings, self.reference_side, self.strategy = settings, reference_side, strategy
        self.branch_counts: torch.Tensor | None = None

    def dispersion_scale(self, h: int, w: int) -> float:
        return 1.0 if self.reference_side is None else h * w / self.reference_side ** 2

    def masks(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(masks, branches)`` for a batch (what training multiplies the features with)."""
        if self.strategy == "always_drop":
            attention = self_attention(features)
            hidden = torch.full((features.shape[0],), BRANCHES.index("hidden"),
                                device=features.device, dtype=torch.int64)
            return drop_mask(attention, self.settings.drop, "above"), hidden
        return selection_masks(features, self.settings,
                               dispersion_scale=self.dispersion_scale(*features.shape[-2:]))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return features
        masks, branches = self.masks(features)
        self.branch_counts = torch.bincount(branches, minlength=len(BRANCHES)).detach()
        return features * masks

    def extra_repr(self) -> str:
        return (f"strategy={self.strategy!r}, reference_side={self.reference_side}, "
                f"{self.settings}")


def branch_share_term(plugins: Mapping[str, nn.Module], prefix: str = "ass") -> LossTerm:
    """A loss term of weight 0 that logs the share of images per branch at every position.

    The values reach ``log.jsonl`` as epoch means under ``"<prefix>/<position>/<branch>"``
    (the term's own value, always 0, under the term's name).
    """
    def log_shares(logits, labels, features, ctx):
        logged = {"loss": torch.zeros((), device=logits.device)}
        for position, module in plugins.items():
            counts = module.branch_counts
            if counts is None:
                continue
            shares = counts.double() / counts.sum().clamp(min=1)
            for branch, share in zip(BRANCHES, shares):
                logged[f"{prefix}/{position}/{branch}"] = share
        return logged

    return LossTerm(log_shares, weight=0.0)


def _reference_sides(positions: Sequence[str],
                     reference_sides: Mapping[str, int] | None) -> dict[str, int | None]:
    sides = dict(reference_sides or {})
    unknown = sorted(set(sides) - set(positions))
    if unknown:
        raise MethodError(f"ASS: reference_sides names {unknown}, which are not among the "
                          f"positions {list(positions)}.")
    return {pos: sides.get(pos) for pos in positions}


def settings_from(options: Mapping) -> SelectionSettings:
    """:class:`SelectionSettings` from a method's options (the unknown ones raise)."""
    known = SelectionSettings.__dataclass_fields__
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise MethodError(f"ASS: unknown option(s) {unknown}; the thresholds are {sorted(known)}.")
    return SelectionSettings(**options)


def build(model: nn.Module, config, positions: str | Sequence[str],
          reference_sides: Mapping[str, int] | None = None, strategy: str = "select",
          **thresholds) -> MethodParts:
    """An :class:`AttentionSelection` after each of ``positions``; the branch shares are logged
    (term ``"ass"``). ``thresholds``: fields of :class:`SelectionSettings`."""
    if isinstance(positions, str):
        positions = [positions]
    settings = settings_from(thresholds)
    sides = _reference_sides(positions, reference_sides)
    plugins = {pos: AttentionSelection(settings, sides[pos], strategy) for pos in positions}
    return MethodParts(plugins=plugins, losses={"ass": branch_share_term(plugins)})


register_method("ass", build)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def branch_shares(logs: Mapping, prefix: str = "ass"):
    """The per-epoch branch shares of runs' logs, long form.

    Args:
        logs: ``{label: list of log.jsonl records}`` (:meth:`wsolkit.runs.RunRecord.log`);
            a label is anything hashable (a ``(method, seed)`` pair, say).
        prefix: the loss term that logged them (``"ass"`` or ``"amh"``).

    Returns:
        A ``pandas.DataFrame`` with the columns ``run``, ``epoch``, ``position``, ``branch`` and
        ``share`` (0-1).
    """
    import pandas as pd

    rows = []
    for label, records in logs.items():
        for record in records:
            for key, value in record.items():
                parts = key.split("/")
                if len(parts) == 3 and parts[0] == prefix and parts[2] in BRANCHES:
                    rows.append({"run": label, "epoch": record["epoch"], "position": parts[1],
                                 "branch": parts[2], "share": value})
    if not rows:
        raise MethodError(f"branch_shares: no '{prefix}/<position>/<branch>' entries in the logs "
                          "(were the runs trained with this method?).")
    return pd.DataFrame(rows)


def plot_attention_masks(images, attentions, thresholds=(0.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5,
                                                         0.4, 0.3, 0.2, 0.1), *,
                         panel: float = 1.1, row_labels=None):
    """Fig. 17: each image, its self-attention map and the drop mask ``M_alpha`` (eq. 11) at
    every threshold; hidden cells dark.

    Args:
        images: ``N`` images ``(3, H, W)`` uint8.
        attentions: ``(N, h, w)`` self-attention maps (eq. 10) of the same images.
        thresholds: the fractions of the maximum, one column each.
        panel: inches per panel.
        row_labels: one label per image (``None``: none).

    Returns:
        The ``Figure`` (not shown).
    """
    from wsolkit import viz

    attentions = torch.as_tensor(attentions, dtype=torch.float32)
    fig, axes = viz.small_multiples(len(images), len(thresholds) + 2, panel=panel)
    for row, (image, attention) in enumerate(zip(images, attentions)):
        first = row == 0
        viz.show_localization(axes[row, 0], image, title="image" if first else None)
        axes[row, 1].imshow(attention.numpy(), cmap="jet")
        axes[row, 1].set_title("attention" if first else "", fontsize=8)
        masks = [drop_mask(attention[None, None], t, "above")[0, 0] for t in thresholds]
        for col, (t, mask) in enumerate(zip(thresholds, masks), start=2):
            axes[row, col].imshow(mask.numpy(), cmap="gray", vmin=0, vmax=1)
            axes[row, col].set_title(f"{t:g}" if first else "", fontsize=8)
        if row_labels is not None:
            axes[row, 0].set_ylabel(row_labels[row], fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
