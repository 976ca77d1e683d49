"""Inter-intra regulated CAMs, CAMs2i (Kou et al., *Weakly Supervised Object Localization with
Inter-Intra Regulated CAMs*).

Two classifiers share one backbone. ``S1`` is the network's own CAM classifier after the last
block; ``S2`` is a second one on an inner stage whose map has the same size (section 3.4: two
1x1 convolutions and GAP). Both are trained with cross-entropy, and two kinds of regulation are
added:

* **intra-sample** (section 3.2): the *confidence mask* of ``S2`` (eq. 3) weighs the squared
  difference between the two maps (``L_int``, eq. 4): where ``S2`` is far from its mean (more
  than the mean distance ``mu1``), ``S1`` is pulled towards ``S2``; where it is ambiguous, ``S1``
  is pushed away, to explore. ``L_adn`` (eq. 6) pulls ``S2``'s class probabilities towards
  ``S1``'s. ``L_intra = CE1 + CE2 + w (L_int + L_adn)`` (eq. 7), ``w`` ramped in from 0.
* **inter-sample** (section 3.3): each image is multiplied by the sigmoid of its class map (the
  foreground image) and by one minus the largest sigmoid over the classes (the background
  image); a fixed feature network ``f`` embeds them, and for every pair of images of one class
  ``p_ij = 1 / (1 + exp(d+ - d-))`` (eq. 9) should be 1: the two foregrounds, and the two
  backgrounds, close; each foreground far from its own background. ``L_inter = -sum log p_ij``
  (eq. 10). A :class:`~wsolkit.methods.registry.ClassGroupSampler` puts images of a class
  side by side in every batch, so that there are pairs.

At test time the two CAMs of the predicted class are min-max normalised, averaged and segmented
at one threshold (the score map ``"cams2i"``); ``"inner_cam"`` is ``S2`` alone, ``"cam"``
``S1`` alone.

Readings of what the paper leaves open (each stated and measured in the chapter):

* **Which channel**: the ground-truth class's, in training (the paper's Fig. 1 and eq. 8 use it).
* **Eq. 4 as printed is unbounded below**: on the ambiguous cells, whose weight is negative, the
  loss falls without limit as ``S1`` and ``S2`` move apart. The default ``interaction="bounded"``
  compares the two maps after per-image min-max normalisation (the normalisation of inference),
  scales the mask by its largest distance (the text's "after normalized": weights in
  ``[-1, 1]``), averages over the cells instead of summing (a weight that does not depend on the
  map size), and treats ``S2`` and the mask as the target (no gradient), as the text says ``S2``
  supervises ``S1``; it lies in ``[-1, 1]``. ``interaction="printed"`` is eq. 4 on the raw maps,
  summed, with gradients into both.
* **Eq. 6's direction**: ``S1``'s probabilities are the target (detached), since the text sets
  ``S1`` "as an additional supervision for ``S2``"; with ``interaction="printed"`` both get the
  gradient, as printed.
* **Eq. 7's ``1 / w0``** with ``w0`` growing from 0 to 1 would be infinite at the start; the text
  wants the two terms ramped *in*: the weight grows linearly from 0 to 1 over the first
  ``ramp`` fraction of the epochs (default one half), then stays at 1.
* **Eq. 9's ``c``** is read as the feature dimension (the ``1/c`` of the co-segmentation loss
  it follows); eq. 10's sums are means over the pairs (a weight independent of the batch). Both
  branches' maps make weighted images; the term is their mean. ``f`` is frozen (the module
  regulates the CAMs, not ``f``: a trainable ``f`` could separate any two images); the
  images are in ``[0, 1]`` before the weighting, then normalised as ``f`` expects.
* **Where S2 sits**: the earliest stage before the last whose output has the last map's size
  (the benchmark's network: pool3, 8 x 8 like block4; VGG16: pool4, 14 x 14 like conv5_3), which
  is what the paper's stride-1 max-pool achieves; a stage of another size is resized
  bilinearly to the last map's size. ``S2``'s hidden width defaults to the last map's channels
  (1024 on VGG16-GAP, the paper's; 128 on the benchmark).
* **The classifiers' structure**: ``S1`` is the book's CAM classifier (a linear layer on the
  pooled map, the same as a 1x1 convolution before GAP), so that the base row is the shared CAM
  baseline; the paper's own base has the two-layer classifier.

In a configuration: ``TrainConfig(method={"cams2i": {"features": "run:<run folder>"}})``; with
``inter_weight=0`` (the paper's CAMsIntra) no feature network is needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsolkit.methods.registry import (
    ClassGroupSampler,
    LossTerm,
    MethodError,
    MethodParts,
    linear_ramp,
    register_method,
)
from wsolkit.models.features import feature_network

__all__ = [
    "INTERACTIONS",
    "PAPER_TABLES",
    "PAPER_THETA",
    "ROWS",
    "SPG_THRESHOLDS",
    "InnerClassifier",
    "agreement_loss",
    "branch_outputs",
    "combined_map_fn",
    "confidence_mask",
    "confidence_thresholds",
    "error_table",
    "inner_map_fn",
    "inner_position",
    "inter_sample_loss",
    "interaction_loss",
    "pair_probabilities",
    "plot_confidence",
    "row_options",
    "top5_hits",
    "weighted_images",
]

#: The paper's tables, every row, in percent. Tables 1-5 are errors (``None``: not given);
#: ``*`` marks numbers the paper obtained by running the authors' code (SPG).
PAPER_TABLES = {
    "Table 1": {  # ILSVRC validation, classification error (top-1, top-5)
        "FixResNeXt-101": (13.6, 2.0), "ResNeXt-101": (14.6, 2.4),
        "EfficientNet-B7": (15.0, 2.8), "GoogLeNet-GAP": (35.0, 13.2),
        "VGGnet-GAP": (33.4, 12.2), "VGGnet-ACoL": (32.5, 12.0),
        "GoogLeNet-ACoL": (29.0, 11.8), "Grad-CAM on VGG16": (30.4, 10.9),
        "SPG*": (32.0, 11.1), "VGG16-base": (32.58, 11.7),
        "VGG16-CAMsIntra": (30.1, 10.6), "VGG16-CAMs2i": (28.1, 9.8),
    },
    "Table 2": {  # ILSVRC validation, localization error (top-1, top-5)
        "Backprop on GoogLeNet": (61.31, 50.55), "Backprop on VGGnet": (61.12, 51.46),
        "GoogLeNet-GAP": (56.40, 43.00), "VGGnet-GAP": (57.20, 45.14),
        "VGGnet-ACoL": (54.17, 40.57), "GoogLeNet-ACoL": (53.28, 42.58),
        "Grad-CAM on VGG16": (56.51, 46.41), "SPG": (51.40, 40.00),
        "VGG16-base": (54.23, 43.76), "VGG16-CAMsIntra": (51.66, 40.89),
        "VGG16-CAMs2i": (48.81, 37.46),
    },
    "Table 3": {  # ILSVRC validation, GT-known localization error
        "GoogLeNet-GAP": (41.34,), "Feedback": (38.80,), "MWP": (38.70,), "STNet": (38.60,),
        "VGGnet-ACoL": (37.04,), "SPG": (35.31,), "VGG16-base": (37.20,),
        "VGG16-CAMs2i": (33.8,),
    },
    "Table 4": {  # CUB-200-2011 test, classification error (top-1)
        "Inception V3": (10.4,), "WS-DAN": (10.7,), "PAIRS": (10.8,), "DPD": (49.0,),
        "DeCAF+DPD": (35.0,), "PANDA R-CNN": (23.6,), "GoogLeNet-GAP(full)": (37.0,),
        "GoogLeNet-GAP(crop)": (32.2,), "GoogLeNet-GAP(BBox)": (29.5,),
        "VGGnet-ACoL": (28.1,), "SPG*": (28.1,), "VGG16-base": (30.4,),
        "VGG16-CAMsIntra": (25.7,), "VGG16-CAMs2i": (23.6,),
    },
    "Table 5": {  # CUB-200-2011 test, localization error (top-1, top-5)
        "GoogLeNet-GAP(full)": (59.00, None), "VGGnet-ACoL": (54.08, 43.49),
        "SPG": (53.36, 42.28), "VGG16-base": (55.26, 42.37),
        "VGG16-CAMsIntra": (45.51, 35.12), "VGG16-CAMs2i": (44.17, 34.26),
    },
    "Table 6": {  # top-1 localization error of CAMs2i's combined map over the threshold
        "CUB": {0.5: 45.12, 0.6: 44.17, 0.7: 45.26},
        "ILSVRC": {0.6: 47.29, 0.7: 48.81, 0.8: 48.02},
    },
}
#: The threshold the paper's text says is best on each dataset (section 4.3). On ILSVRC its
#: own Table 6 gives the lowest error at 0.6, not 0.7.
PAPER_THETA = {"CUB": 0.6, "ILSVRC": 0.7}

#: SPG's fixed thresholds on ``[0, 1]`` attention maps in its released code: object above 0.7
#: and background below 0.05 for the final mask, 0.5 and 0.05 for the side branches' masks.
SPG_THRESHOLDS = {"object": 0.7, "side object": 0.5, "background": 0.05}

#: ``bounded``: this book's reading of eq. 4 (see the module docstring); ``printed``: as printed.
INTERACTIONS = ("bounded", "printed")

#: The rows of the paper's tables (and the readings the book adds) as options of the method.
ROWS = {
    "CAMsIntra": {"inter_weight": 0.0},
    "CAMs2i": {},
    "CAMs2i, eq. 4 as printed": {"interaction": "printed"},
    "CAMs2i, ramp over all epochs": {"ramp": 1.0},
}
#: Options only the inter-sample module reads (left out of a run without it).
INTER_OPTIONS = ("features", "inter_images", "per_class")

#: The head's name and the score maps' names.
HEAD = "inner_classifier"
COMBINED = "cams2i"
INNER = "inner_cam"


def row_options(row: str, features: str | None, **settings) -> dict:
    """``TrainConfig.method`` of one row of :data:`ROWS`.

    Args:
        row: a key of :data:`ROWS`.
        features: the feature network ``f`` of the rows that use one
            (:func:`wsolkit.models.features.feature_network`).
        settings: further options for every row (a profile's ``inter_images``).
    """
    from wsolkit.profiles import check_choice

    options = {"features": features, **settings, **ROWS[check_choice("row", row, tuple(ROWS))]}
    if options.get("inter_weight", 1.0) == 0:
        for name in INTER_OPTIONS:  # no inter-sample term: no f, no grouped batches
            options.pop(name, None)
    return {"cams2i": options}


# --------------------------------------------------------------------------------------------
# The second classifier
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def _map_sizes(model: nn.Module, image_size: int) -> dict[str, tuple[int, int]]:
    was_training = model.training
    probe = torch.zeros(1, 3, image_size, image_size)
    _, features = model.eval()(probe)
    model.train(was_training)
    return {name: tuple(value.shape[-2:]) for name, value in features.items()}


def inner_position(model: nn.Module, image_size: int) -> str:
    """Where ``S2`` goes by default: the earliest stage before the last whose output has the
    last map's size, else the stage before the last (its map is then resized)."""
    sizes = _map_sizes(model, image_size)
    stages = list(model.stages)[:-1]
    same = [name for name in stages if sizes[name] == sizes["cam"]]
    return same[0] if same else stages[-1]


class InnerClassifier(nn.Module):
    """``S2``: a 1x1 convolution to ``hidden`` channels, ReLU, a 1x1 convolution to the classes,
    on the feature map of stage ``position``; GAP of its maps gives ``S2``'s logits.

    ``forward(features)`` returns ``{"maps": (N, C, h, w), "logits": (N, C)}``, the maps at the
    stage's resolution (the losses and maps resize them to ``S1``'s where they differ).
    """

    def __init__(self, position: str, in_channels: int, num_classes: int, hidden: int) -> None:
        super().__init__()
        self.position = position
        self.net = nn.Sequential(nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(hidden, num_classes, 1))
        from wsolkit.models import init_new_layers

        init_new_layers(self.net)

    def forward(self, features: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        maps = self.net(features[self.position])
        return {"maps": maps, "logits": maps.mean(dim=(2, 3))}

    def extra_repr(self) -> str:
        return f"position={self.position!r}"


def _class_maps(features: Mapping, model: nn.Module, classes: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S1^c, S2^c)``, each ``(N, h, w)`` float32 at ``S1``'s resolution. ``S1`` includes the
    classifier's bias, so that its spatial mean is the logit (eq. 1)."""
    from wsolkit.cam import class_activation_maps

    weight, bias = model.classifier.weight, model.classifier.bias
    cam = features["cam"]
    s1 = class_activation_maps(cam, weight.to(cam.device), classes=classes).float()
    if bias is not None:
        s1 = s1 + bias.to(cam.device)[classes].float().view(-1, 1, 1)
    inner = features[HEAD]["maps"]
    s2 = inner[torch.arange(len(classes), device=inner.device), classes].float()
    return s1, _resized(s2, s1.shape[-2:])


def _resized(maps: torch.Tensor, size) -> torch.Tensor:
    """``(N, C, h, w)`` or ``(N, h, w)`` maps resized bilinearly to ``size`` (unchanged when
    they have it)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if maps.ndim == 3:
        return _resized(maps[:, None], size)[:, 0]
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.flatten(1)
    low = flat.amin(1).view(-1, 1, 1)
    span = (flat.amax(1).view(-1, 1, 1) - low).clamp_min(1e-12)
    return (maps - low) / span


# --------------------------------------------------------------------------------------------
# The intra-sample terms (eqs. 3-7)
# --------------------------------------------------------------------------------------------


def confidence_mask(s2: torch.Tensor, *, normalise: bool = False
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Eq. 3 for a batch of maps ``(N, h, w)``.

    ``mu0`` is each map's mean, ``|S2 - mu0|`` each cell's distance, ``mu1`` the mean distance;
    the mask is the distance, negated where it is below ``mu1``. The thresholds of eq. 5 are
    ``xi1 = mu0 + mu1`` (cells above are confident foreground) and ``xi2 = mu0 - mu1``
    (below: confident background); the cells between have negative weights.

    Args:
        s2: ``(N, h, w)`` float maps.
        normalise: divide the mask by each map's largest distance (weights in ``[-1, 1]``).

    Returns:
        ``(mask (N, h, w), mu0 (N,), mu1 (N,))``.
    """
    if s2.ndim != 3:
        raise ValueError(f"confidence_mask: expected (N, h, w) maps, got shape {tuple(s2.shape)}.")
    mu0 = s2.mean(dim=(1, 2))
    distance = (s2 - mu0.view(-1, 1, 1)).abs()
    mu1 = distance.mean(dim=(1, 2))
    mask = torch.where(distance < mu1.view(-1, 1, 1), -distance, distance)
    if normalise:
        mask = mask / distance.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    return mask, mu0, mu1


def interaction_loss(s1: torch.Tensor, s2: torch.Tensor, form: str = "bounded") -> torch.Tensor:
    """Eq. 4 for a batch of class maps ``(N, h, w)`` (``s2`` at ``s1``'s size), batch mean.

    ``"printed"``: ``sum_ij (S1 - S2)^2 * mask`` on the raw maps, gradients into both;
    ``"bounded"``: the mean over cells of ``(n(S1) - n(S2))^2 * mask / max |S2 - mu0|`` with
    ``n`` the per-image min-max normalisation and ``S2`` and the mask detached (in ``[-1, 1]``).
    """
    if form == "printed":
        mask, _, _ = confidence_mask(s2)
        return ((s1 - s2).pow(2) * mask).sum(dim=(1, 2)).mean()
    if form != "bounded":
        raise MethodError(f"cams2i: interaction = {form!r}; expected one of {list(INTERACTIONS)}.")
    target = s2.detach()
    mask, _, _ = confidence_mask(target, normalise=True)
    return ((_minmax(s1) - _minmax(target)).pow(2) * mask).mean(dim=(1, 2)).mean()


def agreement_loss(logits1: torch.Tensor, logits2: torch.Tensor, *, detach_first: bool = True
                   ) -> torch.Tensor:
    """Eq. 6: ``sum_c (softmax(y1)_c - softmax(y2)_c)^2``, batch mean; ``y1`` is the target
    unless ``detach_first`` is false."""
    first = F.softmax(logits1.float(), dim=1)
    if detach_first:
        first = first.detach()
    return (first - F.softmax(logits2.float(), dim=1)).pow(2).sum(1).mean()


# --------------------------------------------------------------------------------------------
# The inter-sample module (eqs. 8-10)
# --------------------------------------------------------------------------------------------


def weighted_images(images: torch.Tensor, maps: torch.Tensor, labels: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8: ``sigmoid(S^c) * I`` and ``(1 - max_c sigmoid(S)) * I``.

    Args:
        images: ``(N, 3, H, W)`` in ``[0, 1]``.
        maps: ``(N, C, h, w)`` raw class maps (upsampled bilinearly to ``H x W``).
        labels: ``(N,)`` the class ``c`` of each image.
    """
    probabilities = torch.sigmoid(maps.float())
    if probabilities.shape[-2:] != images.shape[-2:]:
        probabilities = F.interpolate(probabilities, size=images.shape[-2:], mode="bilinear",
                                      align_corners=False)
    rows = torch.arange(len(labels), device=labels.device)
    foreground = probabilities[rows, labels][:, None]
    background = 1 - probabilities.amax(dim=1, keepdim=True)
    return foreground * images, background * images


def pair_probabilities(fore: torch.Tensor, back: torch.Tensor, labels: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 9 for every pair ``i < j`` of images of one class.

    Args:
        fore, back: ``(N, n)`` features of the foreground and background images.
        labels: ``(N,)``.

    Returns:
        ``(d_plus - d_minus (P,), pairs (P, 2))``: ``p_ij = sigmoid(d_minus - d_plus)``; the
        difference is returned so that the loss is computed stably (:func:`inter_sample_loss`).
    """
    n = fore.shape[1]
    i, j = torch.triu_indices(len(labels), len(labels), offset=1, device=labels.device)
    same = labels[i] == labels[j]
    i, j = i[same], j[same]
    d_plus = ((fore[i] - fore[j]).pow(2).sum(1) + (back[i] - back[j]).pow(2).sum(1)) / (2 * n)
    d_minus = ((fore[i] - back[i]).pow(2).sum(1) + (fore[j] - back[j]).pow(2).sum(1)) / (2 * n)
    return d_plus - d_minus, torch.stack([i, j], dim=1)


def inter_sample_loss(difference: torch.Tensor) -> torch.Tensor:
    """Eq. 10 as a mean over the pairs: ``-log p_ij = softplus(d_plus - d_minus)``; 0 for a
    batch without pairs."""
    if difference.numel() == 0:
        return difference.sum()
    return F.softplus(difference).mean()


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


def inner_map_fn(model, features, classes) -> torch.Tensor:
    """``S2`` of ``classes``, ``(N, h, w)``, at ``S1``'s resolution."""
    return _class_maps(features, model, classes)[1]


def combined_map_fn(model, features, classes) -> torch.Tensor:
    """The inference map: the mean of the min-max normalised ``S1`` and ``S2`` of ``classes``."""
    s1, s2 = _class_maps(features, model, classes)
    return (_minmax(s1) + _minmax(s2)) / 2


def _check_weight(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise MethodError(f"cams2i: {name} = {value!r}; expected a number >= 0.")
    return float(value)


def build(model: nn.Module, config, features: str | None = None, position: str | None = None,
          hidden: int | None = None, intra_weight: float = 1.0, inner_weight: float = 1.0,
          inter_weight: float = 1.0, ramp: float = 0.5, interaction: str = "bounded",
          per_class: int = 2, inter_images: int | None = None) -> MethodParts:
    """``S2``, its cross-entropy, the ramped ``L_int + L_adn``, and the inter-sample term.

    Args:
        features: ``f`` (:func:`wsolkit.models.features.feature_network`); needed when
            ``inter_weight > 0``.
        position: the stage ``S2`` reads (``None``: :func:`inner_position`).
        hidden: ``S2``'s hidden channels (``None``: the last map's channels).
        intra_weight: the final weight of ``L_int + L_adn`` (1 in eq. 7).
        inner_weight: the weight of ``S2``'s cross-entropy (1 in eq. 7).
        inter_weight: the weight of ``L_inter`` (0: the paper's CAMsIntra).
        ramp: the fraction of the epochs over which the intra weight grows from 0 (0: none).
        interaction: one of :data:`INTERACTIONS`.
        per_class: images of one class side by side in every batch (the inter-sample term).
        inter_images: the inter-sample term on the first this many images of each batch (whole
            groups of ``per_class``; ``None``: all). ``f`` runs four times per image, so a CPU
            run may estimate the term on part of the batch.
    """
    intra_weight, inner_weight = _check_weight("intra_weight", intra_weight), \
        _check_weight("inner_weight", inner_weight)
    inter_weight = _check_weight("inter_weight", inter_weight)
    if not (isinstance(ramp, (int, float)) and 0 <= ramp <= 1):
        raise MethodError(f"cams2i: ramp = {ramp!r}; expected a fraction of the epochs in [0, 1].")
    if interaction not in INTERACTIONS:
        raise MethodError(f"cams2i: interaction = {interaction!r}; expected one of "
                          f"{list(INTERACTIONS)}.")
    stages = list(model.stages)
    position = position if position is not None else inner_position(model, config.image_size)
    if position not in stages[:-1]:
        raise MethodError(f"cams2i: position = {position!r}; expected a stage before the last, "
                          f"one of {stages[:-1]}.")
    hidden = hidden if hidden is not None else model.channels["cam"]
    if not isinstance(hidden, int) or hidden < 1:
        raise MethodError(f"cams2i: hidden = {hidden!r}; expected an int >= 1.")
    parts = MethodParts(heads={HEAD: InnerClassifier(position, model.channels[position],
                                                     config.num_classes, hidden)})
    printed = interaction == "printed"

    def inner_cross_entropy(logits, labels, features, ctx):
        inner = features[HEAD]["logits"].float()
        return {"loss": F.cross_entropy(inner, labels),
                "inner_acc": (inner.argmax(1) == labels).float().mean().detach()}

    def intra(logits, labels, features, ctx):
        s1, s2 = _class_maps(features, ctx.model, labels)
        interaction_value = interaction_loss(s1, s2, interaction)
        agreement = agreement_loss(logits, features[HEAD]["logits"], detach_first=not printed)
        mask, _, _ = confidence_mask(s2.detach())
        return {"loss": interaction_value + agreement, "interaction": interaction_value.detach(),
                "agreement": agreement.detach(),
                "confident_share": (mask > 0).float().mean().detach()}

    if inner_weight > 0:
        parts.losses["inner_ce"] = LossTerm(inner_cross_entropy, inner_weight)
    if intra_weight > 0:
        weight = (linear_ramp(ramp * config.epochs, intra_weight) if ramp > 0 else intra_weight)
        parts.losses["intra"] = LossTerm(intra, weight)
    if inter_weight > 0:
        if not isinstance(per_class, int) or per_class < 2:
            raise MethodError(f"cams2i: per_class = {per_class!r}; the inter-sample term needs "
                              "pairs, so an int >= 2.")
        if inter_images is not None and (not isinstance(inter_images, int)
                                         or inter_images < per_class
                                         or inter_images % per_class):
            raise MethodError(f"cams2i: inter_images = {inter_images!r}; expected None or a "
                              f"multiple of per_class = {per_class}.")
        parts.frozen["inter_features"] = feature_network(features, config, owner="cams2i",
                                                         option="features")
        parts.batch_sampler = ClassGroupSampler(per_class, config.batch_size)
        mean = torch.tensor(config.mean).view(1, 3, 1, 1)
        std = torch.tensor(config.std).view(1, 3, 1, 1)

        def inter(logits, labels, features, ctx):
            keep = slice(None) if inter_images is None else slice(0, inter_images)
            images = ctx.images[keep].float() * std.to(ctx.images.device) \
                + mean.to(ctx.images.device)
            classifier = ctx.model.classifier
            cam = features["cam"][keep]
            s1 = torch.einsum("ck,nkhw->nchw", classifier.weight.to(cam.dtype), cam)
            if classifier.bias is not None:
                s1 = s1 + classifier.bias.to(cam.dtype).view(1, -1, 1, 1)
            s2 = features[HEAD]["maps"][keep]
            network = ctx.model.frozen["inter_features"]
            differences = []
            for maps in (s1, _resized(s2, s1.shape[-2:])):
                fore, back = weighted_images(images, maps, labels[keep])
                both = network(torch.cat([fore, back]))
                difference, _ = pair_probabilities(both[: len(fore)], both[len(fore):],
                                                   labels[keep])
                differences.append(difference)
            losses = torch.stack([inter_sample_loss(d) for d in differences])
            return {"loss": losses.mean(), "pairs": float(differences[0].numel()),
                    "p_mean": torch.sigmoid(-torch.cat(differences)).mean().detach()}

        parts.losses["inter"] = LossTerm(inter, inter_weight)
    return parts



register_method("cams2i", build, maps={COMBINED: combined_map_fn, INNER: inner_map_fn})


# --------------------------------------------------------------------------------------------
# What the chapter shows
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def branch_outputs(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                   mean: Sequence[float], std: Sequence[float], batch_size: int = 256) -> dict:
    """Both branches of a trained CAMs2i model on ``(N, 3, S, S)`` uint8 images.

    Returns:
        ``{"logits1", "logits2": (N, C), "s1", "s2": (N, h, w) the raw maps of labels'
        classes}``, float32 on the CPU (``s2`` at ``s1``'s resolution).
    """
    device = next(model.parameters()).device
    model = model.eval()
    shift = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    scale = torch.tensor(std, device=device).view(1, 3, 1, 1)
    out: dict[str, list] = {"logits1": [], "logits2": [], "s1": [], "s2": []}
    for start in range(0, len(images), batch_size):
        batch = (images[start:start + batch_size].to(device).float() / 255 - shift) / scale
        logits, features = model(batch)
        s1, s2 = _class_maps(features, model, labels[start:start + batch_size].to(device))
        for key, value in (("logits1", logits), ("logits2", features[HEAD]["logits"]),
                           ("s1", s1), ("s2", s2)):
            out[key].append(value.float().cpu())
    return {key: torch.cat(values) for key, values in out.items()}


def confidence_thresholds(s2: torch.Tensor) -> dict[str, np.ndarray]:
    """Eq. 5's per-image thresholds of maps ``(N, h, w)``, raw and on the ``[0, 1]`` scale of
    the min-max normalised map (where SPG's fixed thresholds live).

    Returns:
        ``{"xi1", "xi2", "xi1_normalised", "xi2_normalised", "foreground_share",
        "background_share"}``, each ``(N,)`` float64 (shares of the cells above ``xi1`` and
        below ``xi2``).
    """
    _, mu0, mu1 = confidence_mask(s2)
    xi1, xi2 = mu0 + mu1, mu0 - mu1
    flat = s2.flatten(1)
    low, span = flat.amin(1), (flat.amax(1) - flat.amin(1)).clamp_min(1e-12)
    return {"xi1": xi1.double().numpy(), "xi2": xi2.double().numpy(),
            "xi1_normalised": ((xi1 - low) / span).double().numpy(),
            "xi2_normalised": ((xi2 - low) / span).double().numpy(),
            "foreground_share": (flat > xi1[:, None]).double().mean(1).numpy(),
            "background_share": (flat < xi2[:, None]).double().mean(1).numpy()}


def plot_confidence(images: torch.Tensor, s2: torch.Tensor, *, panel: float = 1.6):
    """Fig. 1 of the paper for a few images: the image, ``S2`` of its class, the signed
    confidence mask (eq. 3) and the confident cells (mask > 0), with ``xi1`` and ``xi2``.

    Args:
        images: ``(N, 3, S, S)`` uint8.
        s2: ``(N, h, w)`` raw maps.

    Returns:
        The ``Figure`` (not shown).
    """
    from wsolkit import viz

    mask, mu0, mu1 = confidence_mask(s2.float())
    fig, axes = viz.small_multiples(4, len(images), panel=panel)
    for c in range(len(images)):
        viz.show_localization(axes[0, c], images[c])
        size = tuple(images.shape[-2:])
        up = lambda m: _resized(m[None].float(), size)[0]
        viz.show_localization(axes[1, c], images[c], score_map=_minmax(up(s2[c])[None])[0])
        limit = float(mask[c].abs().max()) or 1.0
        axes[2, c].imshow(up(mask[c]), cmap="coolwarm", vmin=-limit, vmax=limit)
        axes[2, c].set_title(f"ξ1 {float(mu0[c] + mu1[c]):.2f}, ξ2 {float(mu0[c] - mu1[c]):.2f}",
                             fontsize=7)
        axes[3, c].imshow(up((mask[c] > 0).float()), cmap="gray", vmin=0, vmax=1)
        for ax in axes[2:, c]:
            ax.set_xticks([])
            ax.set_yticks([])
    for r, label in enumerate(["image", "S2 (class)", "mask (eq. 3)", "confident"]):
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def top5_hits(model: nn.Module, data, *, mean: Sequence[float], std: Sequence[float]
              ) -> np.ndarray:
    """``(N,)`` bool: the true class of each image of a ``LocalizationSet`` is among the
    model's five highest logits (all classes where there are fewer than five)."""
    from wsolkit.evaluation.inference import predict_maps

    hits = []
    for rows, logits, _ in predict_maps(model, data.images, classes=data.labels, mean=mean,
                                        std=std):
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits.append((ranked == data.labels[rows, None]).any(1).numpy())
    return np.concatenate(hits)


def error_table(evals: Mapping[tuple, object], top5: Mapping[tuple, np.ndarray],
                rows: Mapping[str, tuple], digits: int = 1):
    """The error rates the paper prints, for arms ``{label: (method, map, rule)}``: top-1 and
    top-5 classification, top-1 and top-5 localization (at the arm's rule) and GT-known
    localization, in percent, each "mean (min-max)" over the seeds, and MaxBoxAccV2.

    Args:
        evals: ``{(method, seed, map): MapEvaluations}`` (:mod:`wsolkit.evaluation.tables`).
        top5: ``{(method, seed): (N,) bool}`` from :func:`top5_hits`.
    """
    import pandas as pd

    from wsolkit.evaluation.tables import per_image, seeds_of
    from wsolkit.reporting import seed_summary

    records = []
    for label, (method, map_name, rule) in rows.items():
        for seed in seeds_of(evals, method, map_name):
            evaluation = evals[method, seed, map_name]
            top1 = per_image(evaluation, rule, "top-1 cls") > 0
            known = per_image(evaluation, rule, "GT-known loc") > 0
            in_top5 = np.asarray(top5[method, seed], dtype=bool)
            if in_top5.shape != known.shape:
                raise ValueError(f"error_table: {method!r} seed {seed} has {in_top5.size} top-5 "
                                 f"hits for {known.size} evaluated images.")
            records.append({
                "row": label, "seed": seed, "top-1 cls err": 100 - 100 * top1.mean(),
                "top-5 cls err": 100 - 100 * in_top5.mean(),
                "top-1 loc err": 100 - 100 * (top1 & known).mean(),
                "top-5 loc err": 100 - 100 * (in_top5 & known).mean(),
                "GT-known loc err": 100 - 100 * known.mean(),
                "MaxBoxAccV2": float(evaluation.fixed["max_box_acc_v2"])})
    return seed_summary(pd.DataFrame(records).set_index(["row", "seed"]), by="row",
                        digits=digits)

