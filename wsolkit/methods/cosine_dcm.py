"""Cosine loss and Dense Class Maps (Barz & Denzler, VISAPP 2022).

A classifier trained with cross-entropy turns its scores into probabilities with a softmax, so
the class activation maps of different classes (and of different images) live on scales that
cannot be compared: CAM can box the one class it is asked about, not decide which classes are
in a scene. Barz & Denzler train with the **cosine loss** instead (eq. 5),

    L(x, c) = 1 - <x, phi(c)> / (|x| |phi(c)|),

where ``x`` is the output of the last linear layer (the "embedding layer", ``W`` of shape
``(D, K)``, bias ``b``) and ``phi(c)`` a fixed embedding of class ``c``: one-hot, or
hierarchy-based so that ``<phi(a), phi(b)>`` is the semantic similarity of the classes
(:mod:`wsolkit.hierarchy`). A cosine network predicts the class whose embedding is closest in
angle to ``x``.

**Dense Class Maps** (DCM, Sec. 3.2) apply the embedding layer to every cell of the last feature
map ``psi(x)`` (a 1 x 1 convolution) and normalise every cell (eq. 6),

    DCE(x)_ij = (W psi(x)_ij + b) / |W psi(x)_ij + b|,

so that each cell gets a cosine similarity to every class, on one common scale:

    sim(x, i, j, c) = <DCE(x)_ij, phi(c)>            (7a)
    class(x, i, j)  = argmax_c sim(x, i, j, c)         (7b)
    score(x, c)     = max_ij 1[class(x,i,j) = c] sim(x, i, j, c)   (8)

The classes present are those with ``score > theta_cls``: a class scores only at cells where it
beats every other class, so of two related classes firing at the same place only the stronger
one is kept. The dense class map (9) labels a cell with its class when that class is selected
and its similarity exceeds ``theta_sim``, and with 0 (background) otherwise. Boxes (Sec. 3.3):
one per selected class, from its similarity map thresholded at ``theta_bbox * max`` (largest
connected component, Zhou et al. 2016), computed at a higher input resolution than training
(the paper: longer side 640 for a network trained at 224).

The CAM baseline for several objects (Sec. 4.5) takes every class with a softmax probability of
at least 15% and boxes each from its min-max normalised CAM at ``theta_bbox``.

Registered here: the method ``"cosine"`` (``TrainConfig(method={"cosine": {"embedding":
"onehot"}})``, see :func:`cosine_loss_factory`), which replaces cross-entropy by the cosine loss
and defines the score map ``"cosine_similarity"`` (eq. 7a of the true class, for the standard
single-object protocol), and the method ``"random_erasing"`` (Zhong et al. 2017), the batch
transform of the paper's training recipe.

The chapter's protocols close the module: :func:`evaluate_scenes` (Sec. 4.4 on a split of
scenes), :func:`cell_statistics` (Fig. 2 over a split), :func:`crop_accuracy`,
:func:`single_object_report` and :func:`localization_hits` (Sec. 4.3), and
:func:`scene_class_map` (the view of one scene in Fig. 1 and 5).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from wsolkit.boxes import best_iou_per_threshold, largest_component_boxes
from wsolkit.cam import normalize_maps, upsample_maps
from wsolkit.hierarchy import Taxonomy, hierarchy_embeddings, onehot_embeddings
from wsolkit.methods.registry import MethodParts, register_method
from wsolkit.metrics import detections_to_coco

__all__ = [
    "DCMInputError",
    "evaluation_code",
    "Detections",
    "RandomErasing",
    "activated_scores",
    "cam_class_map",
    "cam_detections",
    "cell_classes",
    "cell_probabilities",
    "cell_score_maps",
    "cell_similarities",
    "cell_statistics",
    "class_embeddings",
    "class_scores",
    "classifier_maps",
    "cosine_loss",
    "cosine_loss_factory",
    "cosine_scores",
    "count_empty_boxes",
    "crop_accuracy",
    "dcm_detections",
    "dense_class_map",
    "dense_embeddings",
    "detections_to_results",
    "evaluate_scenes",
    "localization_accuracy",
    "localization_hits",
    "map_boxes",
    "normalize_cells",
    "object_crop_transform",
    "presence_f1",
    "scene_class_map",
    "scene_detections",
    "score_separation_auc",
    "select_classes",
    "selected_counts",
    "single_object_ious",
    "single_object_report",
]

EMBEDDINGS = ("onehot", "hierarchy")


class DCMInputError(ValueError):
    """Inputs of the cosine loss or of a dense class map have the wrong shape or values."""


# ---------------------------------------------------------------------------------------------
# Class embeddings and the cosine loss (eq. 5)
# ---------------------------------------------------------------------------------------------


def class_embeddings(num_classes: int, embedding: str = "onehot", *,
                     taxonomy: Taxonomy | Sequence[str] | None = None,
                     classes: Sequence[str] | None = None) -> np.ndarray:
    """The class embeddings ``phi`` as a ``(C, D)`` float64 array with unit rows.

    Args:
        num_classes: ``C``.
        embedding: ``"onehot"`` (``D = C``, the identity) or ``"hierarchy"`` (``D = C``,
            ``phi @ phi.T`` = the tree similarity, :func:`wsolkit.hierarchy.hierarchy_embeddings`).
        taxonomy: for ``"hierarchy"``: a :class:`~wsolkit.hierarchy.Taxonomy` or its
            ``"child parent"`` lines (what a JSON training configuration can hold).
        classes: for ``"hierarchy"``: the taxonomy's leaf name of every label, in label order.

    Raises:
        DCMInputError: an unknown embedding, or ``"hierarchy"`` without a taxonomy and ``C``
            class names.
    """
    if embedding not in EMBEDDINGS:
        raise DCMInputError(f"embedding = {embedding!r}; expected one of {EMBEDDINGS}.")
    if embedding == "onehot":
        return onehot_embeddings(num_classes)
    if taxonomy is None or classes is None or len(classes) != num_classes:
        raise DCMInputError(
            f"embedding='hierarchy' needs taxonomy= (a Taxonomy or its 'child parent' lines) and "
            f"classes= ({num_classes} leaf names in label order); got taxonomy "
            f"{'given' if taxonomy is not None else 'None'} and "
            f"{'no' if classes is None else len(classes)} class names.")
    tree = taxonomy if isinstance(taxonomy, Taxonomy) else Taxonomy.from_lines(
        taxonomy, source="the 'cosine' method's taxonomy option")
    return hierarchy_embeddings(tree, list(classes))


def _unit_embeddings(embeddings, like: torch.Tensor) -> torch.Tensor:
    phi = torch.as_tensor(embeddings, dtype=torch.float32, device=like.device)
    if phi.ndim != 2 or phi.shape[1] != like.shape[1]:
        raise DCMInputError(
            f"embeddings have shape {tuple(phi.shape)} but the network gives {like.shape[1]} "
            f"outputs per image/cell; expected (C, {like.shape[1]}).")
    return F.normalize(phi, dim=1)


def cosine_scores(outputs: torch.Tensor, embeddings) -> torch.Tensor:
    """Cosine similarity of every output to every class embedding: the cosine network's scores.

    Args:
        outputs: ``(N, D)`` float, the embedding layer's output.
        embeddings: ``(C, D)`` class embeddings (any norm; they are normalised).

    Returns:
        ``(N, C)`` float32 in ``[-1, 1]``; the prediction is the argmax.
    """
    if outputs.ndim != 2:
        raise DCMInputError(f"outputs have shape {tuple(outputs.shape)}; expected (N, D).")
    return F.normalize(outputs.float(), dim=1) @ _unit_embeddings(embeddings, outputs).T


def cosine_loss(outputs: torch.Tensor, labels: torch.Tensor, embeddings) -> torch.Tensor:
    """Eq. 5 averaged over the batch: ``mean_n 1 - cos(outputs[n], phi(labels[n]))``.

    Args:
        outputs: ``(N, D)`` float, the embedding layer's output (no activation).
        labels: ``(N,)`` int64 classes.
        embeddings: ``(C, D)`` class embeddings.

    Returns:
        Scalar float32 tensor in ``[0, 2]``.
    """
    if labels.ndim != 1 or labels.shape[0] != outputs.shape[0]:
        raise DCMInputError(
            f"labels have shape {tuple(labels.shape)} for outputs {tuple(outputs.shape)}; "
            "expected (N,).")
    scores = cosine_scores(outputs, embeddings)
    return (1.0 - scores.gather(1, labels[:, None])[:, 0]).mean()


def cosine_loss_factory(embedding: str = "onehot", taxonomy: Sequence[str] | None = None,
                        classes: Sequence[str] | None = None):
    """The classification loss of the method ``"cosine"``.

    ``TrainConfig(method={"cosine": {"embedding": "onehot"}})``, or with
    ``{"embedding": "hierarchy", "taxonomy": [...lines...], "classes": [...]}`` (see
    :func:`class_embeddings`). The loss function returns the loss and ``embedding_acc``, the
    batch accuracy of the cosine prediction (``fit``'s own ``train_acc`` takes the argmax of the
    raw outputs, which is the prediction only for one-hot embeddings).
    """
    if embedding not in EMBEDDINGS:
        raise DCMInputError(f"method 'cosine': embedding = {embedding!r}; expected one of {EMBEDDINGS}.")
    fixed = None
    if embedding == "hierarchy":
        fixed = class_embeddings(len(classes or ()), "hierarchy", taxonomy=taxonomy, classes=classes)
    cache: dict[tuple, torch.Tensor] = {}

    def loss_fn(logits, labels, features, ctx):
        key = (logits.shape[1], logits.device)
        if key not in cache:  # a constant, built once per device
            phi = fixed if fixed is not None else onehot_embeddings(logits.shape[1])
            cache[key] = _unit_embeddings(phi, logits)
        scores = cosine_scores(logits, cache[key])
        loss = (1.0 - scores.gather(1, labels[:, None])[:, 0]).mean()
        accuracy = (scores.argmax(1) == labels).float().mean()
        return {"loss": loss, "embedding_acc": accuracy.detach()}

    return loss_fn


def build_cosine(model: torch.nn.Module, config, embedding: str = "onehot",
                 taxonomy: Sequence[str] | None = None,
                 classes: Sequence[str] | None = None) -> MethodParts:
    """The cosine loss in place of cross-entropy; the class embeddings are kept on the model as
    a buffer outside the state dict (rebuilt from the options) for the map ``"cosine_similarity"``."""
    loss = cosine_loss_factory(embedding, taxonomy, classes)
    phi = class_embeddings(model.classifier.out_features, embedding, taxonomy=taxonomy, classes=classes)
    model.register_buffer("class_embeddings", torch.as_tensor(phi, dtype=torch.float32), persistent=False)
    return MethodParts(classification_loss=loss)


def cosine_similarity_map_fn(model: torch.nn.Module, features, classes: torch.Tensor) -> torch.Tensor:
    """Eq. 7a of each image's class: the cosine similarity of every cell's dense embedding to
    the class embedding (one-hot where the model has none). The standard pipeline min-max
    normalises it; the chapter's own single-object check divides by the maximum instead."""
    weight, bias = model.classifier.weight, model.classifier.bias
    dense = dense_embeddings(features["cam"].float(), weight.float(), None if bias is None else bias.float())
    phi = getattr(model, "class_embeddings", None)
    if phi is None:
        phi = onehot_embeddings(weight.shape[0])
    sims = cell_similarities(dense, phi.to(dense.device) if torch.is_tensor(phi) else phi)
    return sims[torch.arange(sims.shape[0], device=sims.device), classes]


register_method("cosine", build_cosine, maps={"cosine_similarity": cosine_similarity_map_fn})


# ---------------------------------------------------------------------------------------------
# Dense class maps (eq. 6-9)
# ---------------------------------------------------------------------------------------------


def dense_embeddings(features: torch.Tensor, weight: torch.Tensor,
                     bias: torch.Tensor | None = None) -> torch.Tensor:
    """The embedding (or classification) layer as a 1 x 1 convolution: ``W psi(x)_ij + b``.

    For a cross-entropy network this is the CAM of every class with its bias (eq. 4); its
    spatial mean is the network's logits (GAP network).

    Args:
        features: ``(N, K, h, w)`` float, the map fed to global pooling (``features["cam"]``).
        weight: ``(D, K)`` weight of the last linear layer (``model.classifier.weight``).
        bias: ``(D,)`` its bias, or ``None``.

    Returns:
        ``(N, D, h, w)`` float tensor.
    """
    if features.ndim != 4 or weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise DCMInputError(
            f"features {tuple(features.shape)} and weight {tuple(weight.shape)}; expected "
            "(N, K, h, w) and (D, K).")
    return F.conv2d(features, weight[:, :, None, None].to(features.dtype),
                    None if bias is None else bias.to(features.dtype))


def normalize_cells(dense: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Eq. 6: every cell's vector divided by its L2 norm (``(N, D, h, w)``; zero cells stay zero)."""
    if dense.ndim != 4:
        raise DCMInputError(f"dense maps have shape {tuple(dense.shape)}; expected (N, D, h, w).")
    return F.normalize(dense.float(), dim=1, eps=eps)


def cell_similarities(dense: torch.Tensor, embeddings) -> torch.Tensor:
    """Eq. 7a: ``sim[n, c, i, j] = <DCE(x_n)_ij, phi(c) / |phi(c)|>``.

    Args:
        dense: ``(N, D, h, w)`` un-normalised dense embeddings (:func:`dense_embeddings`).
        embeddings: ``(C, D)`` class embeddings.

    Returns:
        ``(N, C, h, w)`` float32 in ``[-1, 1]``.
    """
    cells = normalize_cells(dense)
    return torch.einsum("ndhw,cd->nchw", cells, _unit_embeddings(embeddings, cells))


def cell_probabilities(dense: torch.Tensor) -> torch.Tensor:
    """The softmax over classes at every cell: a cross-entropy network's activation applied
    densely (the counterpart of eq. 6 in Fig. 2 of the paper). ``(N, C, h, w)`` float32."""
    if dense.ndim != 4:
        raise DCMInputError(f"dense maps have shape {tuple(dense.shape)}; expected (N, C, h, w).")
    return torch.softmax(dense.float(), dim=1)


def cell_classes(scores: torch.Tensor) -> torch.Tensor:
    """Eq. 7b: the best class of every cell, ``(N, h, w)`` int64 (ties to the lower index)."""
    if scores.ndim != 4:
        raise DCMInputError(f"scores have shape {tuple(scores.shape)}; expected (N, C, h, w).")
    return scores.argmax(dim=1)


def class_scores(scores: torch.Tensor) -> torch.Tensor:
    """Eq. 8: ``score[n, c] = max_ij 1[class(i, j) = c] * scores[n, c, i, j]``.

    As written in the paper, the indicator zeroes the cells a class does not win, so a class
    that wins no cell scores 0, and so does one whose winning cells are all negative (unless it
    wins every cell).

    Args:
        scores: ``(N, C, h, w)`` per-cell class scores (similarities, or probabilities).

    Returns:
        ``(N, C)`` float.
    """
    winners = F.one_hot(cell_classes(scores), scores.shape[1]).permute(0, 3, 1, 2)
    return (scores * winners.to(scores.dtype)).amax(dim=(2, 3))


def select_classes(scores: torch.Tensor, theta_cls: float) -> torch.Tensor:
    """The classes present, ``score(x, c) > theta_cls`` (Sec. 3.2): ``(N, C)`` bool."""
    return class_scores(scores) > theta_cls


def dense_class_map(scores: torch.Tensor, theta_cls: float, theta_sim: float, *,
                    selected: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 9: the class of every cell, or 0 for background.

    Args:
        scores: ``(N, C, h, w)`` per-cell class scores (eq. 7a similarities).
        theta_cls: class threshold (used when ``selected`` is not given).
        theta_sim: cell threshold, ``theta_sim <= theta_cls`` in the paper.
        selected: ``(N, C)`` bool, the classes present, when they were decided elsewhere (e.g.
            at feature resolution while ``scores`` are upsampled for display).

    Returns:
        ``(N, h, w)`` int64: ``c + 1`` for a cell of class ``c`` (0-based labels), 0 for
        background, as the paper numbers classes ``1 .. C`` with 0 the background.
    """
    chosen = select_classes(scores, theta_cls) if selected is None else selected.bool()
    if chosen.shape != scores.shape[:2]:
        raise DCMInputError(f"selected has shape {tuple(chosen.shape)}; expected {tuple(scores.shape[:2])}.")
    best = cell_classes(scores)
    best_score = scores.gather(1, best[:, None])[:, 0]
    keep = chosen.gather(1, best.flatten(1)).view_as(best) & (best_score > theta_sim)
    return torch.where(keep, best + 1, torch.zeros_like(best))


def cam_class_map(dense: torch.Tensor, min_probability: float, theta: float, *,
                  probabilities: torch.Tensor | None = None) -> torch.Tensor:
    """The CAM counterpart of eq. 9 for figures: classes with softmax probability
    ``>= min_probability`` (15% in the paper), each CAM min-max normalised on its own; a cell
    gets the selected class with the highest normalised CAM if that exceeds ``theta``.

    Args:
        dense: ``(N, C, h, w)`` CAMs with bias (:func:`dense_embeddings`); their spatial mean is
            the logits.
        min_probability: the probability a class needs to count as present.
        theta: the cell threshold on the normalised CAM.
        probabilities: ``(N, C)`` class probabilities when ``dense`` is not at feature
            resolution (e.g. upsampled for display); default the softmax of its spatial mean.

    Returns:
        ``(N, h, w)`` int64, ``c + 1`` or 0 (background).
    """
    if probabilities is None:
        probabilities = torch.softmax(dense.float().mean(dim=(2, 3)), dim=1)
    normalised = _minmax_cells(dense.float())
    selected = probabilities >= min_probability
    masked = torch.where(selected[:, :, None, None], normalised, torch.full_like(normalised, -1.0))
    best = masked.argmax(dim=1)
    keep = masked.gather(1, best[:, None])[:, 0] > theta
    return torch.where(keep, best + 1, torch.zeros_like(best))


def _minmax_cells(maps: torch.Tensor) -> torch.Tensor:
    low = maps.amin(dim=(2, 3), keepdim=True)
    spread = maps.amax(dim=(2, 3), keepdim=True) - low
    return torch.where(spread > 0, (maps - low) / spread.clamp_min(1e-30), torch.zeros_like(maps))


# ---------------------------------------------------------------------------------------------
# Boxes and detections
# ---------------------------------------------------------------------------------------------


def map_boxes(maps, thresholds, normalization: str) -> np.ndarray:
    """One box per map and threshold: the largest connected component (``wsolkit.boxes``).

    Args:
        maps: ``(K, H, W)`` float score maps, any range.
        thresholds: ``(T,)`` fractions in ``[0, 1)``.
        normalization: ``"max"``: ``relu(m) / max(m)``, so the threshold is ``theta * max`` as in
            Barz & Denzler (Sec. 3.3) for similarity maps; ``"minmax"``: the CAM chain of the
            reference evaluation. Maps that cannot be normalised (no positive value for
            ``"max"``, constant for ``"minmax"``) give ``[0, 0, 0, 0]`` and one
            ``DegenerateMapWarning`` with their count.

    Returns:
        ``(K, T, 4)`` int64 ``[x1, y1, x2, y2]`` in map pixels.
    """
    if normalization not in ("max", "minmax"):
        raise DCMInputError(f"normalization = {normalization!r}; expected 'max' or 'minmax'.")
    t = torch.as_tensor(maps).float()
    if t.ndim != 3:
        raise DCMInputError(f"maps have shape {tuple(t.shape)}; expected (K, H, W).")
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.shape[0] == 0:
        return np.zeros((0, thresholds.size, 4), dtype=np.int64)
    normalised = normalize_maps(t, mode=normalization).double().numpy()
    return largest_component_boxes(normalised, thresholds)


@dataclass
class Detections:
    """The detections of one image: one box per candidate class and threshold.

    Attributes:
        classes: ``(K,)`` int64 labels.
        scores: ``(K,)`` float64 confidences (DCM: eq. 8; CAM: softmax probability).
        boxes: ``(K, T, 4)`` int64 ``[x1, y1, x2, y2]`` in pixels of the map the boxes were
            drawn on, one per box threshold ``theta_bbox``.
        map_size: ``(H, W)`` of that map (the original image size, usually).
    """

    classes: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    map_size: tuple[int, int]


def _check_dense(dense) -> list[torch.Tensor]:
    items = list(dense)
    for k, d in enumerate(items):
        if not isinstance(d, torch.Tensor) or d.ndim != 3:
            raise DCMInputError(
                f"dense maps item {k}: expected a (D, h, w) tensor, got "
                f"{type(d).__name__} {tuple(getattr(d, 'shape', ()))}.")
    return items


def dcm_detections(dense, embeddings, map_sizes: Sequence[tuple[int, int]], thresholds, *,
                   theta_cls: float | None = None) -> list[Detections]:
    """DCM boxes (Sec. 3.3): one per class present, from its similarity map at ``theta_bbox * max``.

    A class is a candidate when it wins at least one cell (eq. 8 gives it a positive score) and,
    if ``theta_cls`` is given, when its score exceeds it; without ``theta_cls`` every candidate is
    kept for a precision-recall analysis, which sweeps that threshold anyway (Sec. 4.4.2).

    Args:
        dense: ``N`` un-normalised dense embeddings ``(D, h, w)`` (a list, or an ``(N, D, h, w)``
            tensor).
        embeddings: ``(C, D)`` class embeddings.
        map_sizes: ``N`` ``(H, W)``: similarity maps are upsampled bicubically to this size and
            boxed there (the original image size gives boxes in original pixels).
        thresholds: ``(T,)`` box thresholds ``theta_bbox``.
        theta_cls: optional class threshold.

    Returns:
        ``N`` :class:`Detections`.
    """
    items = _check_dense(dense)
    out = []
    for d, size in zip(items, map_sizes, strict=True):
        sims = cell_similarities(d[None].cpu(), embeddings)
        scores = class_scores(sims)[0]
        # A positive eq. 8 score means the class wins at least one cell.
        keep = scores > (0.0 if theta_cls is None else max(theta_cls, 0.0))
        classes = torch.nonzero(keep).flatten()
        maps = upsample_maps(sims[0, classes], tuple(size), mode="bicubic")
        out.append(Detections(classes.numpy().astype(np.int64), scores[classes].double().numpy(),
                              map_boxes(maps, thresholds, "max"), (int(size[0]), int(size[1]))))
    return out


def cam_detections(dense, map_sizes: Sequence[tuple[int, int]], thresholds, *,
                   min_probability: float = 0.0) -> list[Detections]:
    """CAM boxes for several objects (Sec. 4.5): every class with softmax probability
    ``>= min_probability``, boxed from its min-max normalised CAM at ``theta_bbox``.

    Args:
        dense: ``N`` CAMs with bias ``(C, h, w)`` (their spatial mean is the logits).
        map_sizes: ``N`` ``(H, W)``; CAMs are upsampled bicubically to this size and boxed there.
        thresholds: ``(T,)`` box thresholds.
        min_probability: 0.15 for the paper's figures; 0 keeps every class (precision-recall).

    Returns:
        ``N`` :class:`Detections` with the probabilities as scores.
    """
    items = _check_dense(dense)
    out = []
    for d, size in zip(items, map_sizes, strict=True):
        d = d.float().cpu()
        probabilities = torch.softmax(d.mean(dim=(1, 2)), dim=0)
        classes = torch.nonzero(probabilities >= min_probability).flatten()
        maps = upsample_maps(d[classes], tuple(size), mode="bicubic")
        out.append(Detections(classes.numpy().astype(np.int64), probabilities[classes].double().numpy(),
                              map_boxes(maps, thresholds, "minmax"), (int(size[0]), int(size[1]))))
    return out


def detections_to_results(detections: Sequence[Detections], image_ids: Sequence[int],
                          image_sizes: Sequence[tuple[int, int]], category_ids: Sequence[int],
                          threshold_index: int) -> list[dict]:
    """COCO results (``wsolkit.metrics.detections_to_coco``) at one box threshold.

    Boxes are scaled from the map they were drawn on to the original image, ``x * W / W_map``
    and ``y * H / H_map`` (nothing changes when the map had the original size).

    Args:
        detections: per image, from :func:`dcm_detections` or :func:`cam_detections`.
        image_ids: COCO image ids.
        image_sizes: original ``(H, W)`` of every image.
        category_ids: the COCO category id of every label.
        threshold_index: which of the ``T`` thresholds.
    """
    ids, boxes, scores, cats = [], [], [], []
    for det, image_id, (height, width) in zip(detections, image_ids, image_sizes, strict=True):
        if det.classes.size == 0:
            continue
        scale = np.array([width / det.map_size[1], height / det.map_size[0]] * 2)
        boxes.append(det.boxes[:, threshold_index].astype(np.float64) * scale)
        scores.append(det.scores)
        cats.append(np.asarray(category_ids)[det.classes])
        ids.append(np.full(det.classes.size, int(image_id)))
    if not ids:
        return []
    return detections_to_coco(np.concatenate(ids), np.concatenate(boxes), np.concatenate(scores),
                              np.concatenate(cats))


def presence_f1(detections: Sequence[Detections], labels: Sequence[np.ndarray], thresholds, *,
                inclusive: bool = False) -> np.ndarray:
    """F1 of the decision "class present" (score above a threshold) over all images and classes.

    A class counts as detected in an image when it is among the image's candidates with a score
    ``> t`` (``>= t`` with ``inclusive``, the CAM rule "probability of at least 15%"); it is
    present when the image has a ground-truth instance of it. Counts are pooled over images
    (micro F1), so every (image, class) decision weighs the same.

    Args:
        detections: per image, from :func:`dcm_detections` or :func:`cam_detections`.
        labels: per image, the labels of its ground-truth instances.
        thresholds: ``(T,)`` score thresholds.
        inclusive: compare with ``>=`` instead of ``>``.

    Returns:
        ``(T,)`` float64 F1 in percent (0 where nothing is detected and nothing is present).
    """
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    tp = np.zeros(t.size)
    fp = np.zeros(t.size)
    present = 0
    for det, truth in zip(detections, labels, strict=True):
        truth = set(np.asarray(truth).reshape(-1).tolist())
        present += len(truth)
        hit = np.array([c in truth for c in det.classes.tolist()], dtype=bool)
        chosen = det.scores[:, None] >= t if inclusive else det.scores[:, None] > t
        tp += (chosen & hit[:, None]).sum(axis=0)
        fp += (chosen & ~hit[:, None]).sum(axis=0)
    denominator = 2 * tp + fp + (present - tp)
    return np.where(denominator > 0, 200 * tp / np.maximum(denominator, 1), 0.0)


@torch.no_grad()
def single_object_ious(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       gt_boxes: Sequence[np.ndarray], thresholds, *, kind: str,
                       embeddings=None, mean: Sequence[float], std: Sequence[float], k: int = 5,
                       batch_size: int = 128, device: torch.device | str | None = None) -> dict:
    """Box IoUs of the true class's map at every threshold, for single-object localization.

    ``kind="cam"``: the CAM, min-max normalised (Zhou et al. 2016); classes ranked by the logits.
    ``kind="dcm"``: the similarity map (eq. 7a) divided by its maximum, so that a threshold
    ``t`` keeps the cells above ``t * max`` (Sec. 3.3); classes ranked by the cosine similarity
    of the pooled output (the cosine network's prediction). Maps are upsampled bicubically to
    the image; boxes follow the reference protocol (largest component).

    Args:
        model: a trained ``wsolkit.models`` network.
        images: ``(N, 3, S, S)`` uint8.
        labels: ``(N,)`` true classes.
        gt_boxes: ``N`` ``(G_i, 4)`` boxes in image pixels (reference rescaling).
        thresholds: ``(T,)`` map thresholds.
        kind: ``"cam"`` or ``"dcm"``.
        embeddings: ``(C, D)`` class embeddings for ``"dcm"``.
        mean, std: the training normalisation.
        k: the "top-k" of the returned ``"topk"`` flags (5 for the ILSVRC error).
        batch_size, device: as in :func:`classifier_maps`.

    Returns:
        ``{"ious": (N, T) float64, "top1": (N,) bool, "topk": (N,) bool}``; top-k localization
        at threshold ``t`` is ``mean(ious[:, t] >= 0.5 & topk)`` (:func:`localization_accuracy`).
        Only the true class's box can match its ground truth, so this equals the ILSVRC rule
        (one box per predicted class, correct if any is right).
    """
    if kind not in ("cam", "dcm") or (kind == "dcm" and embeddings is None):
        raise DCMInputError(f"kind = {kind!r}; expected 'cam', or 'dcm' with embeddings.")
    thresholds = np.asarray(thresholds, dtype=np.float64)
    ious, top1, topk = [], [], []
    for start in range(0, images.shape[0], batch_size):
        rows = slice(start, min(start + batch_size, images.shape[0]))
        dense = torch.stack(classifier_maps(model, images[rows], mean=mean, std=std,
                                            batch_size=batch_size, device=device))
        truth = labels[rows]
        if kind == "cam":
            scores = dense.mean(dim=(2, 3))
            raw = dense[torch.arange(dense.shape[0]), truth]
            mode = "minmax"
        else:
            scores = cosine_scores(dense.mean(dim=(2, 3)), embeddings)
            raw = cell_similarities(dense, embeddings)[torch.arange(dense.shape[0]), truth]
            mode = "max"
        # float32 maps, then float64 for the boxes: the chain of wsolkit.evaluation.
        maps = normalize_maps(upsample_maps(raw.float(), tuple(images.shape[-2:])), mode=mode)
        ious.append(best_iou_per_threshold(maps.double().numpy(), list(gt_boxes[rows]), thresholds))
        ranked = torch.topk(scores, min(k, scores.shape[1]), dim=1).indices
        top1.append((ranked[:, 0] == truth).numpy())
        topk.append((ranked == truth[:, None]).any(dim=1).numpy())
    return {"ious": np.concatenate(ious), "top1": np.concatenate(top1),
            "topk": np.concatenate(topk)}


def localization_accuracy(ious: np.ndarray, correct: np.ndarray | None = None,
                          iou: float = 0.5) -> np.ndarray:
    """Percent of images whose box reaches ``iou`` (and, if given, whose class is ``correct``).

    Args:
        ious: ``(N, T)`` from :func:`single_object_ious`.
        correct: ``(N,)`` bool (``"top1"`` or ``"topk"``), or ``None`` for GT-known.
        iou: 0.5 in the ILSVRC protocol.

    Returns:
        ``(T,)`` float64 percentages; the localization error is ``100 -`` it.
    """
    hit = np.asarray(ious) >= iou
    if correct is not None:
        hit &= np.asarray(correct, dtype=bool)[:, None]
    return hit.mean(axis=0) * 100


def score_separation_auc(object_values, background_values) -> float:
    """How well a per-cell score tells object cells from background cells: the probability that
    a random object cell scores higher than a random background cell (ties count half), i.e.
    the area under the ROC curve. 0.5 is chance, 1 perfect separation."""
    pos = np.asarray(object_values, dtype=np.float64).ravel()
    neg = np.asarray(background_values, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise DCMInputError(f"score_separation_auc: {pos.size} object and {neg.size} background "
                            "values; both must be non-empty.")
    values = np.concatenate([pos, neg])
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(values.size)
    sorted_values = values[order]
    # Average ranks over ties (Mann-Whitney U).
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [values.size]])
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2
    u = ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


@torch.no_grad()
def classifier_maps(model: torch.nn.Module, images, *, mean: Sequence[float],
                    std: Sequence[float], batch_size: int = 64,
                    device: torch.device | str | None = None) -> list[torch.Tensor]:
    """The last linear layer applied to every cell (:func:`dense_embeddings`) for each image.

    Args:
        model: a ``wsolkit.models`` network (``features["cam"]`` and ``model.classifier``).
        images: an iterable of ``(3, H, W)`` uint8 tensors (sizes may differ; consecutive images
            of one size share a forward pass), or an ``(N, 3, H, W)`` uint8 tensor.
        mean, std: the normalisation the model was trained with.
        batch_size: images per forward pass.
        device: default CUDA when available.

    Returns:
        ``N`` float32 CPU tensors ``(D, h, w)``.
    """
    device = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    out: list[torch.Tensor] = []
    batch: list[torch.Tensor] = []

    def flush() -> None:
        x = (torch.stack(batch).to(device).float() / 255 - mean_t) / std_t
        _, features = model(x)
        bias = model.classifier.bias
        dense = dense_embeddings(features["cam"].float(), model.classifier.weight.float(),
                                 None if bias is None else bias.float())
        out.extend(dense.cpu().unbind(0))
        batch.clear()

    for image in images:
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise DCMInputError(
                f"classifier_maps: image {len(out) + len(batch)} is {image.dtype} "
                f"{tuple(image.shape)}; expected a (3, H, W) uint8 tensor.")
        if batch and (image.shape != batch[0].shape or len(batch) == batch_size):
            flush()
        batch.append(image)
    if batch:
        flush()
    return out


# ---------------------------------------------------------------------------------------------
# Training recipe: random erasing and the object-crop augmentation
# ---------------------------------------------------------------------------------------------


class RandomErasing:
    """Random erasing (Zhong et al., AAAI 2020; arXiv 2017) on a normalised batch, at most one
    rectangle per image.

    With probability ``p`` an image gets a rectangle of area ``[area[0], area[1]]`` of the image
    and aspect ratio (height / width) log-uniform in ``aspect``, filled with ``value`` (0 is the
    dataset mean after normalisation). Drawn from PyTorch's global generator on the batch's
    device, which :func:`wsolkit.train.fit` seeds per epoch.

    Args:
        p: probability per image.
        area: range of the erased fraction of the image area.
        aspect: range of the aspect ratio.
        value: fill value.
    """

    def __init__(self, p: float = 0.5, area: Sequence[float] = (0.02, 0.4),
                 aspect: Sequence[float] = (0.3, 3.3), value: float = 0.0) -> None:
        if not 0 <= p <= 1 or not 0 < area[0] <= area[1] <= 1 or not 0 < aspect[0] <= aspect[1]:
            raise DCMInputError(
                f"RandomErasing(p={p}, area={tuple(area)}, aspect={tuple(aspect)}): expected "
                "0 <= p <= 1, 0 < area low <= high <= 1 and 0 < aspect low <= high.")
        self.p, self.area, self.aspect, self.value = float(p), tuple(area), tuple(aspect), float(value)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        device = images.device
        u = torch.rand(n, 5, device=device)
        area = (self.area[0] + (self.area[1] - self.area[0]) * u[:, 0]) * height * width
        log_low, log_high = np.log(self.aspect[0]), np.log(self.aspect[1])
        ratio = torch.exp(log_low + (log_high - log_low) * u[:, 1])
        h = torch.sqrt(area * ratio).round().clamp(1, height)
        w = torch.sqrt(area / ratio).round().clamp(1, width)
        top = ((height - h + 1) * u[:, 2]).floor()
        left = ((width - w + 1) * u[:, 3]).floor()
        ys = torch.arange(height, device=device)[None, :, None]
        xs = torch.arange(width, device=device)[None, None, :]
        inside = ((ys >= top[:, None, None]) & (ys < (top + h)[:, None, None])
                  & (xs >= left[:, None, None]) & (xs < (left + w)[:, None, None])
                  & (u[:, 4] < self.p)[:, None, None])
        return torch.where(inside[:, None], torch.full_like(images, self.value), images)

    def __repr__(self) -> str:
        return f"RandomErasing(p={self.p}, area={self.area}, aspect={self.aspect}, value={self.value})"


def build_random_erasing(model: torch.nn.Module, config, p: float = 0.5,
                         area: Sequence[float] = (0.02, 0.4), aspect: Sequence[float] = (0.3, 3.3),
                         value: float = 0.0) -> MethodParts:
    """:class:`RandomErasing` as the run's batch transform."""
    return MethodParts(batch_transform=RandomErasing(p, area, aspect, value))


register_method("random_erasing", build_random_erasing)


def object_crop_transform(size: int = 224, short_side: Sequence[int] = (256, 480)):
    """The object-crop augmentation of Barz & Denzler (Sec. 4.2) for a ``wsolkit.data`` sample:
    the shorter side resized to a random length in ``short_side``, a random ``size x size`` crop
    (padded with zeros where the crop is smaller), a horizontal flip with probability 0.5.
    Returns ``[0, 1]`` float images (``fit`` normalises); random erasing is the batch transform
    ``"random_erasing"``.
    """
    from torchvision.transforms import v2

    low, high = int(short_side[0]), int(short_side[1])
    if not 0 < low <= high or size > high:
        raise DCMInputError(f"short_side = {tuple(short_side)} with size {size}: expected "
                            "0 < low <= high and size <= high.")
    return v2.Compose([
        v2.ToImage(), v2.RandomShortestSize(list(range(low, high + 1))),
        v2.RandomCrop(size, pad_if_needed=True), v2.RandomHorizontalFlip(0.5),
        v2.ToDtype(torch.float32, scale=True)])


# ---------------------------------------------------------------------------------------------
# The evaluation protocols of the chapter (scenes, cells, crops, single objects)
# ---------------------------------------------------------------------------------------------


def activated_scores(dense: torch.Tensor, embeddings=None) -> torch.Tensor:
    """Every cell's class scores after the network's activation (Fig. 2): the softmax over
    classes for a cross-entropy network (``embeddings=None``), the eq. 7a similarities for a
    cosine network.

    Args:
        dense: ``(N, D, h, w)`` outputs of the last layer at every cell (:func:`classifier_maps`).
        embeddings: ``(C, D)`` class embeddings of a cosine network, or ``None``.

    Returns:
        ``(N, C, h, w)`` float32.
    """
    return cell_probabilities(dense) if embeddings is None else cell_similarities(dense, embeddings)


def scene_detections(dense, map_sizes: Sequence[tuple[int, int]], thresholds,
                     embeddings=None) -> list[Detections]:
    """The candidates of the precision-recall analysis (Sec. 4.4): CAM's every class scored by
    its probability (``embeddings=None``, :func:`cam_detections`) or DCM's every class that wins
    a cell, scored by eq. 8 (:func:`dcm_detections`), with one box per box threshold.

    Maps without a positive value (or constant ones) give the box ``[0, 0, 0, 0]`` without a
    warning; :func:`count_empty_boxes` counts them.
    """
    import warnings

    from wsolkit.cam import DegenerateMapWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateMapWarning)
        if embeddings is None:
            return cam_detections(dense, map_sizes, thresholds)
        return dcm_detections(dense, embeddings, map_sizes, thresholds)


def count_empty_boxes(detections: Sequence[Detections]) -> int:
    """How many (detection, box threshold) pairs got the empty box ``[0, 0, 0, 0]``."""
    return int(sum((d.boxes == 0).all(axis=-1).sum() for d in detections))


def selected_counts(detections: Sequence[Detections], thresholds, *,
                    inclusive: bool = False) -> np.ndarray:
    """``(N, T)`` int64: the classes of every image whose score exceeds each threshold (``>=``
    with ``inclusive``, CAM's "probability of at least 15%")."""
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    rows = [(d.scores[:, None] >= t) if inclusive else (d.scores[:, None] > t) for d in detections]
    return np.stack([r.sum(axis=0) for r in rows]).astype(np.int64) if rows else \
        np.zeros((0, t.size), dtype=np.int64)


@torch.no_grad()
def evaluate_scenes(model: torch.nn.Module, scenes, box_thresholds, *, mean: Sequence[float],
                    std: Sequence[float], embeddings=None, cls_thresholds=(),
                    iou_thresholds: Sequence[float] = (0.0, 0.25), keep_matches: bool = False,
                    device: torch.device | str | None = None) -> dict:
    """Sec. 4.4 on one split of scenes: COCO precision-recall of CAM or DCM candidates
    (:func:`scene_detections`) at every box threshold, and the "class present" decisions.

    Args:
        model: a trained network.
        scenes: a ``wsolkit.evaluation.DetectionSet`` (images at the inference size).
        box_thresholds: ``(B,)`` values of ``theta_bbox``.
        mean, std: the training normalisation.
        embeddings: ``(C, D)`` for a cosine network (DCM), ``None`` for CAM.
        cls_thresholds: ``(P,)`` class thresholds for the presence decisions (CAM: a
            probability, compared with ``>=``; DCM: ``theta_cls``, compared with ``>``).
        iou_thresholds: ``(T,)`` IoU thresholds of the matching.
        keep_matches: also return the matches (one box threshold only) for a bootstrap over
            scenes: the entries of ``wsolkit.evaluation.scenes.DetectionMatches.to_arrays``.
        device: where the network runs.

    Returns:
        ``{"map": (B, T)`` percent, ``"recall": (B, T)`` class-mean highest recall in percent,
        ``"precision": (B, T, 101)`` class-mean interpolated precision, ``"boxes"`` and
        ``"empty_boxes"`` counts over all box thresholds, ``"presence_f1": (P,)`` percent
        (:func:`presence_f1`), ``"selected": (N, P)`` classes per image above each class
        threshold ``}``, plus the matches with ``keep_matches``.

    Raises:
        DCMInputError: ``keep_matches`` with more than one box threshold.
    """
    from wsolkit.evaluation.scenes import detection_metrics, match_detections

    thresholds = np.asarray(box_thresholds, dtype=np.float64).reshape(-1)
    if keep_matches and thresholds.size != 1:
        raise DCMInputError(f"evaluate_scenes: keep_matches needs one box threshold, got "
                            f"{thresholds.size}.")
    dense = classifier_maps(model, scenes.images, mean=mean, std=std, device=device)
    detections = scene_detections(dense, scenes.orig_sizes, thresholds, embeddings)
    rows = {"map": [], "recall": [], "precision": []}
    for b in range(thresholds.size):
        results = detections_to_results(detections, scenes.image_ids, scenes.orig_sizes,
                                        scenes.category_ids, b)
        matches = match_detections(scenes.coco, results, scenes.image_ids, iou_thresholds)
        metrics = detection_metrics(matches)
        for name in rows:
            rows[name].append(metrics[name][0])
    inclusive = embeddings is None
    out = {name: np.stack(values) for name, values in rows.items()}
    out.update({"boxes": int(sum(d.classes.size for d in detections)) * thresholds.size,
                "empty_boxes": count_empty_boxes(detections),
                "presence_f1": presence_f1(detections, scenes.labels, cls_thresholds,
                                           inclusive=inclusive),
                "selected": selected_counts(detections, cls_thresholds, inclusive=inclusive)})
    if keep_matches:
        out.update(matches.to_arrays())
    return out


@torch.no_grad()
def cell_statistics(dense: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], *,
                    embeddings=None, theta_cls: float = 0.8, theta_sim: float = 0.5,
                    min_cover: float = 0.5, bins: int = 40) -> dict:
    """Fig. 2 over a split: every cell's best class score before and after the activation,
    object cells against background cells, and which cells eq. 9 keeps, per scene.

    A cell is an object cell when at least ``min_cover`` of it lies on an object mask. Before
    the activation a cell's score is its largest output (the raw CAM for cross-entropy); after
    it, its largest :func:`activated_scores`. The kept cells are those eq. 9 labels at
    ``theta_cls`` / ``theta_sim`` (on softmax scores for a cross-entropy network, only for
    comparison).

    Args:
        dense: ``S`` outputs ``(D, h, w)`` of the last layer at every cell.
        masks: ``S`` unions of the object masks at the input size, ``(H, W)``.
        embeddings: ``(C, D)`` for a cosine network, ``None`` for cross-entropy.
        theta_cls, theta_sim: eq. 9's thresholds (0.8 and 0.5 in Fig. 2).
        min_cover: the object share that makes an object cell.
        bins: histogram bins.

    Returns:
        ``{"object_cells", "background_cells", "kept_object", "kept_background"``: ``(S,)``
        counts per scene; for ``stage`` in ``before``, ``after``: ``"pairs_<stage>"`` the
        ``(S, S)`` ordered-pair counts (:func:`wsolkit.evaluation.scenes.pair_counts`),
        ``"auc_<stage>"`` the pooled AUC, ``"hist_<stage>"`` ``{"edges", "object",
        "background"}``\\ ``}``.
    """
    import torch.nn.functional as F_

    from wsolkit.evaluation.scenes import pair_counts

    if len(dense) != len(masks):
        raise DCMInputError(f"cell_statistics: {len(dense)} maps and {len(masks)} masks.")
    values = {"before": [], "after": []}
    on_object, kept, owner = [], [], []
    for s, (d, mask) in enumerate(zip(dense, masks)):
        scores = activated_scores(d[None].float(), embeddings)
        values["before"].append(d.float().amax(dim=0).flatten())
        values["after"].append(scores.amax(dim=1).flatten())
        kept.append((dense_class_map(scores, theta_cls, theta_sim) > 0).flatten())
        cover = F_.adaptive_avg_pool2d(torch.as_tensor(mask)[None, None].float(), d.shape[-2:])
        on_object.append(cover.flatten() >= min_cover)
        owner.append(torch.full((d.shape[-2] * d.shape[-1],), s, dtype=torch.int64))
    obj = torch.cat(on_object).numpy()
    kept_all = torch.cat(kept).numpy()
    scene = torch.cat(owner).numpy()
    n = len(dense)
    out = {"object_cells": np.bincount(scene[obj], minlength=n),
           "background_cells": np.bincount(scene[~obj], minlength=n),
           "kept_object": np.bincount(scene[obj & kept_all], minlength=n),
           "kept_background": np.bincount(scene[~obj & kept_all], minlength=n)}
    for stage, parts in values.items():
        v = torch.cat(parts).double().numpy()
        # Softmax scores lie in [0, 1] and similarities in [-1, 1]; raw outputs anywhere.
        low, high = (min(float(v.min()), 0.0), 1.0) if stage == "after" else (float(v.min()), float(v.max()))
        edges = np.linspace(low, high, bins + 1)
        out[f"hist_{stage}"] = {"edges": edges, "object": np.histogram(v[obj], edges)[0],
                                "background": np.histogram(v[~obj], edges)[0]}
        out[f"auc_{stage}"] = score_separation_auc(v[obj], v[~obj])
        out[f"pairs_{stage}"] = pair_counts(v, obj, scene, n)
    return out


@torch.no_grad()
def cell_score_maps(dense: torch.Tensor, embeddings=None, *, theta_cls: float = 0.8,
                    theta_sim: float = 0.5) -> dict[str, torch.Tensor]:
    """The three heat maps of Fig. 2 for one image: every cell's best class score before the
    activation, after it (:func:`activated_scores`), and after it where eq. 9 keeps the cell
    (0 elsewhere).

    Args:
        dense: ``(D, h, w)`` outputs of the last layer at every cell.
        embeddings: ``(C, D)`` for a cosine network, ``None`` for cross-entropy.
        theta_cls, theta_sim: eq. 9's thresholds.

    Returns:
        ``{"before", "after", "kept"}``, each ``(h, w)`` float32.
    """
    scores = activated_scores(dense[None].float(), embeddings)
    best = scores.amax(dim=1)[0]
    kept = dense_class_map(scores, theta_cls, theta_sim)[0] > 0
    return {"before": dense.float().amax(dim=0), "after": best,
            "kept": torch.where(kept, best, torch.zeros_like(best))}


@torch.no_grad()
def crop_accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                  mean: Sequence[float], std: Sequence[float], embeddings=None,
                  parents: np.ndarray | None = None) -> dict:
    """How often a network names the class of an object crop: the argmax of the logits
    (cross-entropy, ``embeddings=None``) or of the cosine similarity of the pooled output
    (:func:`cosine_scores`).

    Args:
        model: a trained network.
        images: ``(N, 3, S, S)`` uint8 crops.
        labels: ``(N,)`` true classes.
        mean, std: the training normalisation.
        embeddings: ``(C, D)`` of a cosine network, or ``None``.
        parents: ``(C,)`` the parent of every class in the tree
            (:func:`wsolkit.hierarchy.parent_indices`), or ``None``.

    Returns:
        ``{"accuracy": percent, "parent_accuracy": percent of predictions with the true class's
        parent}`` (the second only with ``parents``).
    """
    dense = classifier_maps(model, images, mean=mean, std=std)
    pooled = torch.stack([d.mean(dim=(1, 2)) for d in dense])
    scores = pooled if embeddings is None else cosine_scores(pooled, embeddings)
    predicted, truth = scores.argmax(dim=1).numpy(), np.asarray(labels)
    out = {"accuracy": float((predicted == truth).mean() * 100)}
    if parents is not None:
        parents = np.asarray(parents)
        out["parent_accuracy"] = float((parents[predicted] == parents[truth]).mean() * 100)
    return out


def single_object_report(out: dict, rows) -> dict:
    """The ILSVRC numbers (Sec. 4.3) of :func:`single_object_ious` on some of its images.

    Returns:
        ``{"top5_loc", "top1_loc", "gt_known"}``: ``(T,)`` percent at every box threshold, and
        ``"top1_cls"``, ``"top5_cls"``: percent; localization errors are ``100 -`` these.
    """
    rows = np.asarray(rows)
    ious, top1, topk = (np.asarray(out[k])[rows] for k in ("ious", "top1", "topk"))
    return {"top5_loc": localization_accuracy(ious, topk),
            "top1_loc": localization_accuracy(ious, top1), "gt_known": localization_accuracy(ious),
            "top1_cls": float(top1.mean() * 100), "top5_cls": float(topk.mean() * 100)}


def localization_hits(out: dict, rows, index: int, *, iou: float = 0.5) -> np.ndarray:
    """``(n,)`` float64, 1 where an image of ``rows`` is localized by the top-5 rule at box
    threshold ``index`` (the per-image values whose mean is ``single_object_report``'s
    ``top5_loc``; what a paired bootstrap over images resamples)."""
    rows = np.asarray(rows)
    hit = (np.asarray(out["ious"])[rows, index] >= iou) & np.asarray(out["topk"], dtype=bool)[rows]
    return hit.astype(np.float64)


@torch.no_grad()
def scene_class_map(dense: torch.Tensor, size: tuple[int, int], theta_cls: float,
                    theta_sim: float, theta_bbox: float, embeddings=None):
    """The figures' view of one scene (Fig. 1 and 5): its class map at the original size and
    its detections at one box threshold.

    DCM (``embeddings`` given): classes with an eq. 8 score above ``theta_cls``, eq. 9 on the
    bicubically upsampled similarities with ``theta_sim``, a box per class at
    ``theta_bbox * max``. CAM (``embeddings=None``): ``theta_cls`` is the probability a class
    needs (15% in the paper), :func:`cam_class_map` with ``theta_sim`` on the normalised CAMs.

    Args:
        dense: ``(D, h, w)`` outputs of the last layer at every cell.
        size: the original ``(H, W)``.
        theta_cls, theta_sim, theta_bbox: the three thresholds.
        embeddings: ``(C, D)``, or ``None`` for CAM.

    Returns:
        ``(labels, detections)``: ``(H, W)`` int64 numpy (``c + 1``, 0 background) and a
        :class:`Detections` with one box threshold.
    """
    import warnings

    from wsolkit.cam import DegenerateMapWarning

    size = (int(size[0]), int(size[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateMapWarning)
        if embeddings is None:
            probabilities = torch.softmax(dense.float().mean(dim=(1, 2)), dim=0)[None]
            up = upsample_maps(dense[None].float(), size, mode="bicubic")
            labels = cam_class_map(up, theta_cls, theta_sim, probabilities=probabilities)[0]
            (det,) = cam_detections([dense], [size], [theta_bbox], min_probability=theta_cls)
        else:
            sims = cell_similarities(dense[None], embeddings)
            selected = select_classes(sims, theta_cls)
            up = upsample_maps(sims, size, mode="bicubic")
            labels = dense_class_map(up, theta_cls, theta_sim, selected=selected)[0]
            (det,) = dcm_detections([dense], embeddings, [size], [theta_bbox], theta_cls=theta_cls)
    return labels.numpy(), det


def evaluation_code() -> list:
    """The modules whose source decides chapter 01's cached results (``code=`` of
    :func:`wsolkit.evaluation.cached_result`): this file, the taxonomy, the scene statistics,
    the scene loader and the protocol (CAM math, boxes, COCO metrics). Keying on these rather
    than on the whole package keeps the chapter's evaluations cached across unrelated edits.
    """
    import wsolkit.boxes.protocol
    import wsolkit.boxes.sweep
    import wsolkit.cam
    import wsolkit.evaluation.detection
    import wsolkit.evaluation.scenes
    import wsolkit.hierarchy
    import wsolkit.metrics

    return [sys.modules[__name__], wsolkit.hierarchy, wsolkit.evaluation.scenes,
            wsolkit.evaluation.detection, wsolkit.cam, wsolkit.boxes.protocol,
            wsolkit.boxes.sweep, wsolkit.metrics]
