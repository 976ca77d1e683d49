"""Saliency-aware WSOL (Chen & Hsu): a decoder trained on pseudo saliency maps, and a
perceptual triplet loss.

The CAM network (encoder ``E`` + GAP + classifier ``C``, cross-entropy, eq. 1) gets a decoder
``D`` that predicts a one-channel objectness map in ``[0, 1]`` at the input's resolution from the
encoder's feature maps, with skip connections (section 2.5). Two losses train ``D`` and,
through it, ``E``:

* the **map loss** (eq. 2), the L2 distance between ``D(x)`` and a *pseudo saliency map*
  ``M^p``: the normalised mean of the masks of unsupervised object proposals. The paper uses
  geodesic object proposals, which exist for no installable package; here they are selective
  search's (OpenCV contrib, ``cv2.ximgproc.segmentation``), computed once per training image,
  cached on disk and moved with the image by every crop and flip (:class:`TargetSpec`);
* the **perceptual triplet loss** (eqs. 3-7): with the foreground image
  ``x^f = D(x) * x`` and the background image ``x^b = (1 - D(x)) * x``, and a *frozen*
  network ``F`` of ``n``-dimensional features,
  ``d_pos = |F(x) - F(x^f)|^2 / n`` and ``d_neg = |F(x^f) - F(x^b)|^2 / n``.

Eq. 5 prints ``L_tri = d_neg - d_pos``, which is smallest when the foreground image is *far*
from the input and *close* to the background image, the opposite of what the text asks for
("low input image and foreground image distinctness", "high foreground image and background
image discrepancy"). The default ``triplet="text"`` is ``d_pos - d_neg``; ``triplet="printed"``
is eq. 5 as printed. Neither has a margin or a hinge; the loss is bounded all the same, because
``D`` is a sigmoid and ``x`` a bounded image, so ``x^f`` and ``x^b`` stay in the box between
the black image and ``x``, and a fixed ``F`` maps that box to a bounded set: ``d_neg`` is at most
the squared diameter of ``F``'s image of it, divided by ``n``. The bound is loose, though, and
it does not prevent the trivial decoder ``D = 1`` (``x^f = x``, ``d_pos = 0``, ``x^b`` black,
``d_neg`` large), towards which the text's form pulls ``D`` and only the map loss pulls it back,
nor masks to which ``F`` responds more strongly than to any image (a trained ``F`` of small
convolutions answers a lattice of dots); the chapter logs the mean of ``D(x)`` and both
distances of every run.

Readings of what the paper leaves open (each stated in the chapter):

* The "L2 norm" of eq. 2 is taken per image as the root mean square difference (the norm
  divided by ``sqrt(HW)``, so that its weight does not depend on the resolution), averaged over
  the batch.
* ``x`` in eqs. 3-4 is the image in ``[0, 1]`` (the normalised input is mapped back), so the
  hidden part of ``x^f`` is black; each image is then normalised as ``F`` expects.
* ``F(x)`` of the input is computed without gradient (it is the fixed anchor); the gradients of
  ``F(x^f)`` and ``F(x^b)`` reach ``D`` and ``E`` through the images.
* The decoder has one block per 2x step from the last feature map to the input (the paper's
  five blocks are its networks' count): each block is a 2x transposed convolution, the skip
  concatenated, and two 3x3 convolutions with ReLU. The skips are, for every map size above the
  last feature map's, the last stage of that size (the backbones' named stages); where the first
  stage already reduces the input, blocks without a skip continue to the input's size, and a
  bilinear resize does what remains of a step that is not exactly 2 (AlexNet's 13 -> 27 -> 55).
  A 1x1 convolution and a sigmoid end it. The benchmark's 4-block network gets 3 blocks, VGG16,
  GoogLeNet, ResNet-50 and AlexNet 4.

In a configuration: ``TrainConfig(method={"saliency_aware": {"perceptual": "run:<run folder>"}})``
with ``perceptual`` one of ``"run:<name>"`` (the pooled last feature map of a trained run in the
runs folder: the benchmark's stand-in for ImageNet weights), ``"imagenet_resnet50"`` (the paper's
ResNet-50, ``n = 2048``, from a local torchvision weights file) or ``"random"`` (a randomly
initialised network of the run's backbone, the ablation). ``map_weight`` and ``triplet_weight``
weigh eq. 8's two terms (1 and 1 in the paper; 0 turns a term off: with both off the run trains
exactly the CAM network). The method registers the score map ``"saliency"``, ``D(x)`` itself
(the same map for every class).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wsolkit.methods.registry import LossTerm, MethodError, MethodParts, TargetSpec, register_method
from wsolkit.models.features import FeatureNetwork, feature_network

__all__ = [
    "PAPER_COLUMNS",
    "PAPER_TABLES",
    "ROWS",
    "PROPOSAL_STRATEGIES",
    "TRIPLET_FORMS",
    "TRIPLET_OPTIONS",
    "TRIPLET_SCALES",
    "SaliencyDecoder",
    "decoder_skips",
    "decoder_views",
    "foreground_background",
    "map_loss",
    "perceptual_network",
    "plot_proposals",
    "evaluate_pseudo_maps",
    "pseudo_maps",
    "pseudo_saliency",
    "pseudo_saliency_spec",
    "proposal_saliency",
    "row_options",
    "saliency_map_fn",
    "selective_search_boxes",
    "triplet_distances",
    "triplet_loss",
]

#: Tables 1 (AlexNet-GAP) and 2 (GoogLeNet-GAP) of the paper, ILSVRC validation set:
#: ``row: (GT-known loc, top-1 loc, top-1 cls)`` in percent. "HaS" is Hide-and-Seek
#: (Singh & Lee, ICCV 2017), scored with Grad-CAM in the paper.
PAPER_TABLES = {
    "Table 1": {
        "AlexNet-GAP": (54.90, 36.25, 60.23),
        "AlexNet-HaS": (58.68, 37.65, 58.68),
        "Ours w/o L_map": (59.30, 38.78, 60.25),
        "Ours w/o L_tri": (60.23, 39.98, 60.44),
        "Ours": (67.23, 44.16, 62.01),
    },
    "Table 2": {
        "GoogLeNet-GAP": (58.41, 43.60, 71.95),
        "GoogLeNet-HaS": (59.93, 44.78, 70.37),
        "Ours w/o L_map": (61.13, 46.01, 71.90),
        "Ours w/o L_tri": (62.74, 46.47, 72.03),
        "Ours": (66.23, 51.30, 74.56),
    },
}
#: The columns of :data:`PAPER_TABLES`.
PAPER_COLUMNS = ("GT-known loc", "top-1 loc", "top-1 cls")

#: Selective search strategies (OpenCV's names): ``single`` one graph segmentation and one
#: similarity, ``fast`` and ``quality`` the diversified strategies of Uijlings et al. (2013).
PROPOSAL_STRATEGIES = ("single", "fast", "quality")
#: ``text``: ``d_pos - d_neg`` (what the paper's text asks for); ``printed``: eq. 5 as printed.
TRIPLET_FORMS = ("text", "printed")
#: The rows of the paper's tables (and the readings this book adds) as options of the method;
#: :func:`row_options` adds the perceptual network and the profile's settings.
ROWS = {
    "Ours": {},
    "Ours w/o L_map": {"map_weight": 0.0},
    "Ours w/o L_tri": {"triplet_weight": 0.0},
    "Ours, eq. 5 as printed": {"triplet": "printed"},
    "Ours, random F": {"perceptual": "random"},
    "Ours, relative distances": {"triplet_scale": "anchor"},
}


def row_options(row: str, perceptual: str, **settings) -> dict:
    """``TrainConfig.method`` of one row of :data:`ROWS`.

    Args:
        row: a key of :data:`ROWS`.
        perceptual: ``F`` for the rows that use one (see :func:`perceptual_network`).
        settings: further options of the method for every row (a profile's
            ``decoder_stride``, ``triplet_images``, ``proposals``).
    """
    from wsolkit.profiles import check_choice

    options = {"perceptual": perceptual, **settings, **ROWS[check_choice("row", row, tuple(ROWS))]}
    if options.get("triplet_weight", 1.0) == 0:
        for name in TRIPLET_OPTIONS:  # no triplet term, no F: nothing to build or to hash
            options.pop(name, None)
    return {"saliency_aware": options}


#: How the distances of eqs. 6-7 are scaled: ``n`` divides by the feature dimension, as
#: printed; ``anchor`` by the squared norm of ``F(x)``, which makes them relative distances
#: whatever the units of ``F``'s features (the paper's ``1/n`` fixes the balance of eq. 8 for an
#: ImageNet ResNet-50 only).
TRIPLET_SCALES = ("n", "anchor")
#: The options that only the triplet term reads (left out of a run without it).
TRIPLET_OPTIONS = ("perceptual", "triplet", "triplet_images", "triplet_scale")


#: The name of the head, of the target and of the score map.
SALIENCY = "saliency"
TARGET = "pseudo_saliency"


# --------------------------------------------------------------------------------------------
# Pseudo saliency maps from object proposals
# --------------------------------------------------------------------------------------------


def _opencv_segmentation():
    try:
        import cv2

        return cv2, cv2.ximgproc.segmentation
    except (ImportError, AttributeError) as err:
        raise MethodError(
            "selective search needs OpenCV's contrib modules (cv2.ximgproc): install "
            "opencv-contrib-python-headless in place of opencv-python-headless (both provide "
            f"the cv2 module, so only one may be installed): {err}") from None


def selective_search_boxes(rgb: np.ndarray, *, strategy: str = "fast", base_k: int = 100,
                           sigma: float = 0.8, max_side: int = 256) -> np.ndarray:
    """Selective search's object proposals for one image, in OpenCV's order.

    Args:
        rgb: ``(H, W, 3)`` uint8 RGB image.
        strategy: one of :data:`PROPOSAL_STRATEGIES`.
        base_k: the graph segmentation's scale ``k`` (smaller: more, smaller regions).
        sigma: the segmentation's Gaussian smoothing.
        max_side: larger images are proposed on a copy resized to this longer side (selective
            search grows with the pixel count), and the boxes scaled back.

    Returns:
        ``(K, 4)`` float32 boxes ``[x1, y1, x2, y2]`` (``x2`` exclusive), inside the image.
    """
    from wsolkit.profiles import check_choice

    check_choice("strategy", strategy, PROPOSAL_STRATEGIES)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"selective_search_boxes: expected an (H, W, 3) uint8 RGB image, got "
                         f"{rgb.dtype} of shape {rgb.shape}.")
    cv2, segmentation = _opencv_segmentation()
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    # One thread: the loaders may run several images at once, and a proposal run is small.
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        search = segmentation.createSelectiveSearchSegmentation()
        search.setBaseImage(image)
        if strategy == "single":
            search.switchToSingleStrategy(base_k, sigma)
        elif strategy == "fast":
            search.switchToSelectiveSearchFast(base_k, base_k, sigma)
        else:
            search.switchToSelectiveSearchQuality(base_k, base_k, sigma)
        rects = np.asarray(search.process(), dtype=np.float32).reshape(-1, 4)
    finally:
        cv2.setNumThreads(threads)
    boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1) / scale
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes


def proposal_saliency(boxes: np.ndarray, height: int, width: int,
                      count: int | None = None) -> np.ndarray:
    """The mean of the masks of the first ``count`` proposals, divided by its maximum.

    Args:
        boxes: ``(K, 4)`` ``[x1, y1, x2, y2]`` boxes (``x2`` exclusive), in proposal order.
        height, width: the image's size.
        count: how many proposals to average (``None``: all of them).

    Returns:
        ``(height, width)`` float32 in ``[0, 1]``; all zeros when there is no proposal.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if count is not None:
        if not isinstance(count, (int, np.integer)) or count < 1:
            raise ValueError(f"proposal_saliency: count = {count!r}; expected an int >= 1 or None.")
        boxes = boxes[:count]
    total = np.zeros((height + 1, width + 1), np.float64)
    x1 = np.floor(boxes[:, 0]).astype(int).clip(0, width)
    y1 = np.floor(boxes[:, 1]).astype(int).clip(0, height)
    x2 = np.ceil(boxes[:, 2]).astype(int).clip(0, width)
    y2 = np.ceil(boxes[:, 3]).astype(int).clip(0, height)
    # Each box adds 1 on its cells: four corners of a 2-D difference array, then prefix sums.
    np.add.at(total, (y1, x1), 1.0)
    np.add.at(total, (y1, x2), -1.0)
    np.add.at(total, (y2, x1), -1.0)
    np.add.at(total, (y2, x2), 1.0)
    counts = total.cumsum(0).cumsum(1)[:height, :width]
    peak = counts.max() if counts.size else 0.0
    return (counts / peak if peak > 0 else counts).astype(np.float32)


def pseudo_saliency(rgb: np.ndarray, *, count: int | None = None, strategy: str = "fast",
                    base_k: int = 100, sigma: float = 0.8, max_side: int = 256) -> np.ndarray:
    """``M^p`` of one image: :func:`proposal_saliency` of :func:`selective_search_boxes`."""
    boxes = selective_search_boxes(rgb, strategy=strategy, base_k=base_k, sigma=sigma,
                                   max_side=max_side)
    return proposal_saliency(boxes, *np.asarray(rgb).shape[:2], count=count)


def pseudo_saliency_spec(count: int | None = None, strategy: str = "fast", base_k: int = 100,
                         sigma: float = 0.8, max_side: int = 256) -> TargetSpec:
    """The :class:`TargetSpec` of the pseudo saliency map. Its key, and with it the on-disk
    cache, names every option, the code that computes the map and the OpenCV version that
    proposes the boxes, so a changed computation is never read back from the cache."""
    def compute(rgb):
        return pseudo_saliency(rgb, count=count, strategy=strategy, base_k=base_k, sigma=sigma,
                               max_side=max_side)

    key = (f"selective-search-mean:{strategy}:k={base_k}:sigma={sigma}:max={max_side}:"
           f"count={count if count is not None else 'all'}:code={_proposal_code()}")
    return TargetSpec(compute, key)


@functools.cache
def _proposal_code() -> str:
    import inspect

    cv2, _ = _opencv_segmentation()
    sources = "".join(inspect.getsource(fn) for fn in (
        selective_search_boxes, proposal_saliency, pseudo_saliency))
    return hashlib.sha256(f"{sources}|cv2 {cv2.__version__}".encode()).hexdigest()[:10]


def pseudo_maps(dataset, size: int, spec: TargetSpec | None = None, *,
                cache=None) -> torch.Tensor:
    """The pseudo saliency maps of every image of a ``wsolkit.data`` split, at ``size``.

    Each map is computed from the image at its original size, through the training targets'
    disk cache (:func:`wsolkit.train.targets.target_map`, so a training image's map is the one
    its runs trained against), then resized bilinearly to ``size x size`` as the evaluation
    resizes the images.

    Returns:
        ``(N, size, size)`` float32 in ``[0, 1]``, in the dataset's order.
    """
    from wsolkit.train.targets import target_map

    spec = spec if spec is not None else pseudo_saliency_spec()
    maps = []
    for index in range(len(dataset)):
        sample = dataset[index]
        value = target_map(spec, sample["image"], path=sample.get("path"), cache=cache,
                           where=str(sample.get("path", index)))
        maps.append(F.interpolate(torch.from_numpy(value)[None, None], size=(size, size),
                                  mode="bilinear", align_corners=False)[0, 0])
    return torch.stack(maps).clamp_(0, 1)


def evaluate_pseudo_maps(maps: torch.Tensor, data, cam_threshold: float = 0.2):
    """The pseudo maps scored as any model's maps, for the chapter's tables and claims.

    Args:
        maps: ``(N, S, S)`` :func:`pseudo_maps` of ``data``'s images, in its order.
        data: a :class:`wsolkit.evaluation.LocalizationSet`.

    Returns:
        A :class:`wsolkit.evaluation.tables.MapEvaluations`. The maps name no class, so
        ``per_image_top1`` is all true: read GT-known loc, MaxBoxAccV2 and PxAP, not top-1.
    """
    from wsolkit.evaluation.localization import evaluate_maps
    from wsolkit.evaluation.tables import MapEvaluations

    if maps.shape != (len(data), data.size, data.size):
        raise ValueError(f"evaluate_pseudo_maps: maps of shape {tuple(maps.shape)} for {len(data)} "
                         f"images of {data.size} px; expected ({len(data)}, {data.size}, {data.size}).")
    results = evaluate_maps(maps, data, cam_threshold=cam_threshold)
    results["per_image_top1"] = np.ones(len(data), dtype=bool)
    results.setdefault("cam_threshold", cam_threshold)
    return MapEvaluations(results)


# --------------------------------------------------------------------------------------------
# The decoder
# --------------------------------------------------------------------------------------------


def decoder_skips(model: nn.Module, image_size: int) -> list[tuple[str, int]]:
    """Where the decoder takes its skips: for every map size above the last feature map's, the
    last stage of that size, finest first.

    Args:
        model: a freshly built :class:`wsolkit.models.GAPNet` (before any method part).
        image_size: the training input side.

    Returns:
        ``[(stage, side), ...]``, the sides at ``image_size``.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            _, features = model(torch.zeros(1, 3, image_size, image_size))
    finally:
        model.train(was_training)
    last = features["cam"].shape[-1]
    by_side: dict[int, str] = {}
    for name in model.stages:
        side = features[name].shape[-1]
        if side > last:
            by_side[side] = name  # later stages of the same size replace earlier ones
    skips = sorted(((name, side) for side, name in by_side.items()), key=lambda s: -s[1])
    if not skips:
        raise MethodError(f"{model.arch}: every stage has the last map's size {last}; the "
                          "decoder needs stages of a higher resolution for its skips.")
    return skips


def _conv_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True))


class _DecoderBlock(nn.Module):
    """A 2x transposed convolution, the skip concatenated (if any), two 3x3 convolutions."""

    def __init__(self, cin: int, skip: int, width: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, width, kernel_size=2, stride=2)
        self.convs = nn.Sequential(_conv_relu(width + skip, width), _conv_relu(width, width))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if skip is None:
            return self.convs(x)
        if x.shape[-2:] != skip.shape[-2:]:  # a step that is not exactly 2 (AlexNet's 13 -> 27)
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip.to(x.dtype)], dim=1))


class SaliencyDecoder(nn.Module):
    """``D``: the encoder's maps to a ``(N, 1, H, W)`` objectness map in ``[0, 1]``.

    Args:
        channels: the backbone's channels by stage name (``model.channels``, with ``"cam"``).
        skips: :func:`decoder_skips`' stages and their sides, finest first.
        image_size: the input side the skips' sides were measured at.
        width: the channels of every decoder block.
        stride: the blocks stop at ``1 / stride`` of the input (skips finer than that are not
            used) and a bilinear resize does the rest: the finest blocks cost the most on a CPU.

    Reads ``features["cam"]`` and the skip stages; its output is ``features["saliency"]``.
    """

    def __init__(self, channels: Mapping[str, int], skips: Sequence[tuple[str, int]],
                 image_size: int, width: int = 16, stride: int = 1) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise MethodError(f"SaliencyDecoder: width = {width!r}; expected an int >= 1.")
        if stride not in (1, 2, 4, 8):
            raise MethodError(f"SaliencyDecoder: stride = {stride!r}; expected 1, 2, 4 or 8.")
        target = image_size / stride
        kept = [(name, side) for name, side in skips if side <= target * 1.01]
        if not kept:
            raise MethodError(f"SaliencyDecoder: no skip stage at or below 1/{stride} of the "
                              f"input ({[s for _, s in skips]} at {image_size} px).")
        self.skip_names = [name for name, _ in kept][::-1]  # coarse to fine
        finest = kept[0][1]
        # Where the encoder's first stage already reduces the input (AlexNet, VGG, ResNet),
        # blocks without a skip continue the 2x steps; a bilinear resize does what remains.
        self.extra_blocks = max(0, round(math.log2(target / finest)))
        self.residual_scale = image_size / (finest * 2 ** self.extra_blocks)
        self.stride = stride
        blocks, cin = [], channels["cam"]
        for name in self.skip_names:
            blocks.append(_DecoderBlock(cin, channels[name], width))
            cin = width
        for _ in range(self.extra_blocks):
            blocks.append(_DecoderBlock(cin, 0, width))
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(width, 1, kernel_size=1)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = features["cam"]
        skips = [features[name] for name in self.skip_names] + [None] * self.extra_blocks
        for skip, block in zip(skips, self.blocks):
            x = block(x, skip)
        x = self.out(x)
        if abs(self.residual_scale - 1.0) > 1e-6:
            size = [round(s * self.residual_scale) for s in x.shape[-2:]]
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(x)

    def extra_repr(self) -> str:
        return (f"skips={self.skip_names}, blocks without skip={self.extra_blocks}, "
                f"final resize={self.residual_scale:g}")


# --------------------------------------------------------------------------------------------
# The perceptual network F
# --------------------------------------------------------------------------------------------


def perceptual_network(spec: str, config) -> FeatureNetwork:
    """Build ``F`` from its configuration string: one of
    :data:`wsolkit.models.features.FEATURE_NETWORKS` (see that module).

    Raises:
        MethodError: an unknown form, none, or a run that is not in the runs folder.
    """
    return feature_network(spec, config, owner="saliency_aware", option="perceptual")


# --------------------------------------------------------------------------------------------
# The losses
# --------------------------------------------------------------------------------------------


def map_loss(saliency: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 2: the root mean square difference per image, averaged over the batch.

    Args:
        saliency: ``(N, 1, H, W)`` ``D(x)``.
        target: ``(N, 1, H', W')`` ``M^p`` (resized bilinearly to ``D(x)``'s size if different).
    """
    target = target.to(torch.float32)
    if target.shape[-2:] != saliency.shape[-2:]:
        target = F.interpolate(target, size=saliency.shape[-2:], mode="bilinear",
                               align_corners=False)
    squared = (saliency.float() - target).pow(2).flatten(1).mean(1)
    return (squared + 1e-12).sqrt().mean()


def foreground_background(images: torch.Tensor, saliency: torch.Tensor
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 3-4: ``x^f = D(x) * x`` and ``x^b = (1 - D(x)) * x`` (pixel-wise, every channel)."""
    if saliency.shape[-2:] != images.shape[-2:]:
        saliency = F.interpolate(saliency, size=images.shape[-2:], mode="bilinear",
                                 align_corners=False)
    return saliency * images, (1 - saliency) * images


def triplet_distances(features: nn.Module, images: torch.Tensor, foreground: torch.Tensor,
                      background: torch.Tensor, scale: str = "n"
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 6-7 per image: ``d_pos = |F(x) - F(x^f)|^2 / n``, ``d_neg = |F(x^f) - F(x^b)|^2 / n``.

    ``F(x)`` is computed without gradient; ``x^f`` and ``x^b`` go through ``F`` as one batch.
    With ``scale="anchor"`` both distances are divided by ``|F(x)|^2`` instead of ``n``
    (see :data:`TRIPLET_SCALES`).
    """
    with torch.no_grad():
        anchor = features(images)
    both = features(torch.cat([foreground, background]))
    fore, back = both[: len(images)], both[len(images):]
    if scale == "n":
        norm = torch.full((len(images),), float(anchor.shape[1]), device=anchor.device)
    elif scale == "anchor":
        norm = anchor.pow(2).sum(1).clamp_min(1e-12)
    else:
        raise MethodError(f"triplet scale {scale!r}; expected one of {list(TRIPLET_SCALES)}.")
    return (anchor - fore).pow(2).sum(1) / norm, (fore - back).pow(2).sum(1) / norm


def triplet_loss(d_pos: torch.Tensor, d_neg: torch.Tensor, form: str = "text") -> torch.Tensor:
    """Eq. 5 read as the text asks (``"text"``: ``d_pos - d_neg``) or as printed
    (``"printed"``: ``d_neg - d_pos``), averaged over the batch."""
    if form == "text":
        return (d_pos - d_neg).mean()
    if form == "printed":
        return (d_neg - d_pos).mean()
    raise MethodError(f"triplet form {form!r}; expected one of {list(TRIPLET_FORMS)}.")


# --------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------


def saliency_map_fn(model, features, classes) -> torch.Tensor:
    """``D(x)`` as a score map ``(N, H, W)`` (class-agnostic)."""
    return features[SALIENCY][:, 0]


def build(model: nn.Module, config, perceptual: str | None = None, map_weight: float = 1.0,
          triplet_weight: float = 1.0, triplet: str = "text", decoder_width: int = 16,
          decoder_stride: int = 1, triplet_images: int | None = None,
          triplet_scale: str = "n", proposals: Mapping | None = None) -> MethodParts:
    """The decoder head, the frozen ``F``, the two loss terms and the pseudo-map target.

    Args:
        perceptual: ``F`` (``"run:<run folder>"``, ``"imagenet_resnet50"`` or ``"random"``).
        map_weight, triplet_weight: the weights of eq. 8's terms (0 leaves a term out).
        triplet: one of :data:`TRIPLET_FORMS`.
        decoder_width, decoder_stride: the decoder's channels and output stride
            (:class:`SaliencyDecoder`).
        triplet_images: the triplet term on the first this many images of each batch only
            (the batches are shuffled, so a random subset; ``None``: every image). ``F`` runs
            three times per image and costs more than the rest of a step, so a CPU run may
            estimate the term on part of the batch; its expected gradient is unchanged.
        triplet_scale: one of :data:`TRIPLET_SCALES`.
        proposals: options of :func:`pseudo_saliency_spec` (``count``, ``strategy``, ...).
    """
    for name, value in (("map_weight", map_weight), ("triplet_weight", triplet_weight)):
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise MethodError(f"saliency_aware: {name} = {value!r}; expected a number >= 0.")
    if triplet_images is not None and (not isinstance(triplet_images, int) or triplet_images < 1):
        raise MethodError(f"saliency_aware: triplet_images = {triplet_images!r}; expected an "
                          "int >= 1 or None.")
    if triplet not in TRIPLET_FORMS:
        raise MethodError(f"saliency_aware: triplet = {triplet!r}; expected one of "
                          f"{list(TRIPLET_FORMS)}.")
    if triplet_scale not in TRIPLET_SCALES:
        raise MethodError(f"saliency_aware: triplet_scale = {triplet_scale!r}; expected one of "
                          f"{list(TRIPLET_SCALES)}.")
    proposals = dict(proposals or {})
    unknown = sorted(set(proposals) - {"count", "strategy", "base_k", "sigma", "max_side"})
    if unknown:
        raise MethodError(f"saliency_aware: unknown proposal option(s) {unknown}; expected "
                          "count, strategy, base_k, sigma, max_side.")
    decoder = SaliencyDecoder(model.channels, decoder_skips(model, config.image_size),
                              config.image_size, decoder_width, decoder_stride)
    parts = MethodParts(heads={SALIENCY: decoder})
    if map_weight > 0:
        parts.targets[TARGET] = pseudo_saliency_spec(**proposals)
        parts.losses["map"] = LossTerm(
            lambda logits, labels, features, ctx: {
                "loss": map_loss(features[SALIENCY], ctx.targets[TARGET]),
                "saliency_mean": features[SALIENCY].detach().float().mean()},
            float(map_weight))
    if triplet_weight > 0:
        parts.frozen["perceptual"] = perceptual_network(perceptual, config)
        mean = torch.tensor(config.mean).view(1, 3, 1, 1)
        std = torch.tensor(config.std).view(1, 3, 1, 1)

        def perceptual_triplet(logits, labels, features, ctx):
            images, saliency = ctx.images, features[SALIENCY]
            if triplet_images is not None:
                images, saliency = images[:triplet_images], saliency[:triplet_images]
            images = images.float() * std.to(images.device) + mean.to(images.device)
            fore, back = foreground_background(images, saliency.float())
            d_pos, d_neg = triplet_distances(ctx.model.frozen["perceptual"], images, fore, back,
                                             triplet_scale)
            return {"loss": triplet_loss(d_pos, d_neg, triplet),
                    "d_pos": d_pos.mean().detach(), "d_neg": d_neg.mean().detach(),
                    "saliency_mean": features[SALIENCY].detach().float().mean()}

        parts.losses["triplet"] = LossTerm(perceptual_triplet, float(triplet_weight))
    return parts


register_method("saliency_aware", build, maps={SALIENCY: saliency_map_fn})


# --------------------------------------------------------------------------------------------
# What the chapter shows
# --------------------------------------------------------------------------------------------


def decoder_views(model: nn.Module, images: torch.Tensor, *, mean: Sequence[float],
                  std: Sequence[float]) -> dict[str, torch.Tensor]:
    """``D(x)``, ``x^f`` and ``x^b`` of a trained model for ``(N, 3, H, W)`` uint8 images.

    Returns:
        ``{"saliency": (N, H, W), "foreground": (N, 3, H, W), "background": (N, 3, H, W)}``,
        float in ``[0, 1]``, on the CPU.
    """
    from wsolkit.evaluation.inference import stage_features

    pixels = images.float() / 255
    with torch.no_grad():
        features = stage_features(model, images, mean=mean, std=std)
    saliency = features[SALIENCY].float()
    fore, back = foreground_background(pixels, saliency)
    return {"saliency": saliency[:, 0], "foreground": fore, "background": back}


def plot_proposals(images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], count: int | None,
                   *, panel: float = 1.8):
    """Each image with its first ``count`` proposals (top) and the pseudo map they give
    (bottom): the figure behind the chapter's proposal-count slider.

    Args:
        images: ``N`` ``(H, W, 3)`` uint8 RGB images.
        boxes: ``N`` :func:`selective_search_boxes` results.
        count: proposals per image (``None``: all).

    Returns:
        The ``Figure`` (not shown).
    """
    from wsolkit import viz

    fig, axes = viz.small_multiples(2, len(images), panel=panel)
    for col, (image, proposals) in enumerate(zip(images, boxes)):
        used = proposals[:count]
        viz.show_localization(axes[0, col], np.asarray(image).transpose(2, 0, 1),
                              title=f"{len(used)} of {len(proposals)}")
        for box in used:
            viz.draw_box(axes[0, col], box, "yellow", linewidth=0.6, inclusive=False)
        height, width = np.asarray(image).shape[:2]
        viz.show_localization(axes[1, col], np.asarray(image).transpose(2, 0, 1),
                              score_map=proposal_saliency(proposals, height, width, count),
                              alpha=0.7)
    axes[0, 0].set_ylabel("proposals", fontsize=9)
    axes[1, 0].set_ylabel("pseudo map", fontsize=9)
    fig.tight_layout()
    return fig
