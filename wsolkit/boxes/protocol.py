"""What a box is: the reference protocol, its conventions, IoU and the OpenCV reference loop.

The reference is the evaluation of Choe et al., "Evaluating Weakly Supervised Object
Localization Methods Right" (CVPR 2020), code ``clovaai/wsolevaluation``. For a score map
``s`` of shape ``(H, W)`` in ``[0, 1]`` and a threshold ``t`` it

1. quantises to 8 bits by truncation, ``u8 = (s * 255).astype(uint8)``, and keeps the
   foreground ``u8 > int(t * u8.max())`` (strict);
2. traces OpenCV contours of the foreground (``cv2.findContours`` with ``RETR_TREE``):
   one outer contour per 8-connected component and one hole contour per 4-connected hole;
3. MaxBoxAcc ("largest"): keeps the contour of largest polygon area (``cv2.contourArea``).
   That area is ``#(2x2 windows fully inside) + 1/2 #(2x2 windows with 3 pixels inside)`` of
   the component with its holes filled, not its pixel count; among equal areas the component
   whose first pixel in raster order comes last wins (``max`` keeps the first in OpenCV's
   list; a hole contour never beats its component's outer contour). MaxBoxAccV2 ("all"):
   keeps every contour, hole contours included (a hole's box is its pixels' bounding box
   grown by one pixel), islands inside holes too;
4. turns a contour into ``[x, y, x + w, y + h]`` (``cv2.boundingRect``), clipped to
   ``W - 1`` / ``H - 1``; ``[0, 0, 0, 0]`` when nothing lies above the threshold;
5. scores a box against ground truth with inclusive ``+1`` areas (:func:`box_iou`), ground
   truth rescaled coordinate by coordinate with ``int()`` (:func:`rescale_boxes`).

``convention="pixel"`` is the documented alternative: float comparison ``s >= t * s.max()``,
8-connected components (as ``scipy.ndimage.label``), the largest by pixel count (ties to the
first in raster order), exclusive boxes ``[x1, y1, x2 + 1, y2 + 1]`` (not clipped) and IoU
without ``+1`` against ground-truth boxes taken as given (``x2 = x1 + width``). How far apart:
on 300 maps of 224 x 224 (150 Gaussian-blob maps with noise, 150 bicubic-upsampled 14 x 14
CAM-like maps), one ground-truth box each (the box of the region above a random fraction of
the peak, jittered by 6 pixels), 100 thresholds, MaxBoxAcc is 79.7 (reference) against 79.3
(pixel) and MaxBoxAccV2 81.0 against 80.6; the largest-component box differs on 28 % of the
(map, threshold) pairs, by one pixel on 22 % and by more on 6 %.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BoxFormatError",
    "CONVENTIONS",
    "MODES",
    "ScoreMapError",
    "binarize_thresholds",
    "box_iou",
    "opencv_reference_boxes",
    "rescale_boxes",
]

CONVENTIONS = ("reference", "pixel")
MODES = ("largest", "all")


class ScoreMapError(ValueError):
    """A score map is not a finite floating-point array in ``[0, 1]`` of the expected shape."""


class BoxFormatError(ValueError):
    """A box array is not ``(K, 4)`` ``[x1, y1, x2, y2]`` with ``0 <= x1 <= x2, 0 <= y1 <= y2``."""


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _to_numpy(x, name: str, error=ValueError) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, on any device
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise error(f"{name} could not be read as an array: {err}") from err


def _check_maps(maps, where: str, values: bool = True) -> tuple[np.ndarray, bool]:
    """Returns ``(N, H, W)`` floating maps and whether a single ``(H, W)`` map was given.

    ``values=False`` leaves the range check to the caller (:func:`_quantise` does it while
    it quantises, without temporaries).
    """
    arr = _to_numpy(maps, f"{where}: maps", ScoreMapError)
    if arr.ndim not in (2, 3):
        raise ScoreMapError(
            f"{where}: maps have shape {arr.shape}; expected (H, W) or (N, H, W) score maps.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ScoreMapError(
            f"{where}: maps have dtype {arr.dtype}; expected floating point in [0, 1] "
            "(divide 8-bit maps by 255 first).")
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ScoreMapError(f"{where}: maps have shape {arr.shape}; H and W must be positive.")
    if values:
        _check_values(arr, where)
    return arr, single


def _check_values(arr: np.ndarray, where: str) -> None:
    bad = ~((arr >= 0) & (arr <= 1))  # also catches NaN
    if bad.any():
        n, y, x = np.argwhere(bad)[0]
        raise ScoreMapError(
            f"{where}: maps[{n}][{y}, {x}] = {float(arr[n, y, x])} and {int(bad.sum())} "
            "values in all lie outside [0, 1] or are NaN; min-max normalise the maps first "
            "(wsolkit.cam.normalize_maps).")


def _check_thresholds(thresholds, where: str) -> np.ndarray:
    t = _to_numpy(thresholds, f"{where}: thresholds").astype(np.float64, copy=False)
    if t.ndim == 0:
        t = t[None]
    if t.ndim != 1 or t.size == 0 or not np.isfinite(t).all():
        raise ValueError(
            f"{where}: thresholds = {t!r}; expected a non-empty 1-D array of finite values, "
            "e.g. binarize_thresholds(0.01).")
    return t


def _check_box_array(boxes, name: str) -> np.ndarray:
    arr = _to_numpy(boxes, name, BoxFormatError).astype(np.float64, copy=False)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise BoxFormatError(f"{name} has shape {arr.shape}; expected (K, 4) [x1, y1, x2, y2].")
    if not np.isfinite(arr).all():
        raise BoxFormatError(f"{name} = {arr.tolist()} holds NaN or inf.")
    bad = (arr[:, 0] > arr[:, 2]) | (arr[:, 1] > arr[:, 3]) | (arr < 0).any(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise BoxFormatError(
            f"{name}[{k}] = {arr[k].tolist()} ({int(bad.sum())} such rows); expected "
            "[x1, y1, x2, y2] with 0 <= x1 <= x2 and 0 <= y1 <= y2.")
    return arr


def _check_choice(value, allowed, name: str, where: str):
    if value not in allowed:
        raise ValueError(f"{where}: {name} = {value!r}; expected one of {allowed}.")


# ---------------------------------------------------------------------------------------------
# Small public helpers
# ---------------------------------------------------------------------------------------------


def binarize_thresholds(interval: float = 0.01) -> np.ndarray:
    """Score-map thresholds of the reference protocol.

    Args:
        interval: spacing, ``0 < interval < 1``; 0.01 gives 100 thresholds, the reference's
            training-time default 0.001 gives 1000.

    Returns:
        ``np.arange(0, 1, interval)``, ``(T,)`` float64.
    """
    if not 0 < interval < 1:
        raise ValueError(
            f"binarize_thresholds: interval = {interval!r}; expected 0 < interval < 1.")
    return np.arange(0, 1, interval)


def rescale_boxes(boxes, from_size, to_size) -> np.ndarray:
    """Rescales boxes between image sizes the reference way: ``int(coord * new / old)``.

    Args:
        boxes: ``(K, 4)`` (or ``(4,)``) ``[x1, y1, x2, y2]`` in pixels of an image of
            ``from_size``; numpy array, list or tensor.
        from_size: ``(H, W)`` of that image (``sample["orig_size"]``); every box must lie
            inside it (a box beyond it is a :class:`BoxFormatError`: usually a ``(W, H)``
            size passed as ``(H, W)``).
        to_size: ``(H, W)`` of the score map, e.g. ``(224, 224)``.

    Returns:
        ``(K, 4)`` int64, each coordinate computed in float64 as ``coord * new / old`` and
        truncated toward zero (x with widths, y with heights).
    """
    arr = _check_box_array(boxes, "rescale_boxes: boxes")
    sizes = []
    for name, size in (("from_size", from_size), ("to_size", to_size)):
        s = tuple(float(v) for v in size)
        if len(s) != 2 or min(s) <= 0:
            raise ValueError(f"rescale_boxes: {name} = {size!r}; expected (H, W), both positive.")
        sizes.append(s)
    (h0, w0), (h1, w1) = sizes
    # Sizes as (H, W): the reference's metadata stores (w, h), and swapped sizes would give
    # wrong boxes without a sound; a box beyond the image it claims to be in is the sign.
    outside = (arr[:, 2] > w0) | (arr[:, 3] > h0)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise BoxFormatError(
            f"rescale_boxes: box {arr[k].tolist()} ({int(outside.sum())} such rows) lies outside "
            f"from_size = (H, W) = {from_size!r}; sizes are (height, width), and a size read "
            "from wsolevaluation's image_sizes.txt is (width, height).")
    new = np.array([w1, h1, w1, h1])
    old = np.array([w0, h0, w0, h0])
    return np.trunc(arr * new / old).astype(np.int64)


def box_iou(pred, gt, inclusive: bool = True) -> np.ndarray:
    """IoU of every predicted box with every ground-truth box.

    Args:
        pred: ``(..., 4)`` ``[x1, y1, x2, y2]``.
        gt: ``(G, 4)`` ``[x1, y1, x2, y2]``.
        inclusive: True (the reference) counts both corners as pixels, so a box spans
            ``(x2 - x1 + 1) * (y2 - y1 + 1)``; False uses ``(x2 - x1) * (y2 - y1)``.

    Returns:
        ``(..., G)`` float64; 0 where the union is not positive.

    Raises:
        BoxFormatError: a box of either argument with NaN, a negative coordinate, or
            ``x2 < x1`` or ``y2 < y1``.
    """
    p = _to_numpy(pred, "box_iou: pred", BoxFormatError).astype(np.float64, copy=False)
    if p.ndim == 0 or p.shape[-1] != 4:
        raise BoxFormatError(f"box_iou: pred has shape {p.shape}; expected (..., 4).")
    # The predicted boxes are checked like the ground truth: a malformed one would otherwise
    # score IoU 0 without a word.
    _check_box_array(p.reshape(-1, 4), "box_iou: pred")
    g = _check_box_array(gt, "box_iou: gt")
    e = 1.0 if inclusive else 0.0
    p = p[..., None, :]
    iw = np.maximum(0.0, np.minimum(p[..., 2], g[:, 2]) - np.maximum(p[..., 0], g[:, 0]) + e)
    ih = np.maximum(0.0, np.minimum(p[..., 3], g[:, 3]) - np.maximum(p[..., 1], g[:, 1]) + e)
    inter = iw * ih
    area_p = (p[..., 2] - p[..., 0] + e) * (p[..., 3] - p[..., 1] + e)
    area_g = (g[:, 2] - g[:, 0] + e) * (g[:, 3] - g[:, 1] + e)
    union = area_p + area_g - inter
    ok = union > 0
    return np.where(ok, inter / np.where(ok, union, 1.0), 0.0)




def opencv_reference_boxes(score_map, thresholds, mode: str = "largest") -> list[np.ndarray]:
    """The reference's own loop: one OpenCV contour tracing per threshold (steps 1-4 above).

    Slow (it traces contours anew at every threshold) and written the way
    ``clovaai/wsolevaluation`` writes it, so that the compiled sweeps can be checked against it on
    any maps; it needs ``opencv-python`` (``pip install opencv-python-headless``), which the rest
    of this module does not.

    Args:
        score_map: ``(H, W)`` floating score map in ``[0, 1]``.
        thresholds: 1-D thresholds.
        mode: ``"largest"`` (the contour of largest area) or ``"all"`` (every contour).

    Returns:
        One ``(K, 4)`` int array ``[x1, y1, x2, y2]`` per threshold, in OpenCV's contour order;
        ``[[0, 0, 0, 0]]`` where nothing lies above the threshold.
    """
    try:
        import cv2
    except ImportError:
        raise ImportError("opencv_reference_boxes needs OpenCV: pip install opencv-python-headless") from None
    _check_choice(mode, MODES, "mode", "opencv_reference_boxes")
    maps, single = _check_maps(score_map, "opencv_reference_boxes")
    if not single:
        raise ScoreMapError(
            f"opencv_reference_boxes: score_map has shape {maps.shape}; expected one (H, W) map.")
    arr = maps[0]
    height, width = arr.shape
    image = np.expand_dims((arr * 255).astype(np.uint8), 2)
    top = int(np.max(image))
    out = []
    for t in _check_thresholds(thresholds, "opencv_reference_boxes"):
        _, binary = cv2.threshold(image, int(t * top), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            out.append(np.array([[0, 0, 0, 0]]))
            continue
        if mode == "largest":
            contours = [max(contours, key=cv2.contourArea)]
        rows = []
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            rows.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        out.append(np.array(rows))
    return out
