"""Class activation maps and Grad-CAM as pure functions over tensors.

CAM (Zhou et al., CVPR 2016, eq. 2; Barz & Denzler, VISAPP 2022, eq. 4): for a network whose
last convolutional features ``psi(x)`` of shape ``(K, h, w)`` are globally average-pooled and fed
to a linear classifier with weight ``W`` of shape ``(C, K)`` and bias ``b``, the activation map of
class ``c`` at cell ``(i, j)`` is

    M_c(i, j) = W_c . psi(x)_ij  (+ b_c).

Because pooling and the classifier are both linear, the spatial mean of ``M_c`` with the bias is
exactly the logit of class ``c``: ``mean_ij M_c(i, j) = W_c . mean_ij psi(x)_ij + b_c``. The
bias shifts every cell alike, so it vanishes under min-max normalisation and the reference
evaluation leaves it out.

Grad-CAM (Selvaraju et al., ICCV 2017, eq. 1-2) weights the feature channels by the spatial mean
of the gradient of the class score; it needs no GAP head.

The reference score-map chain of Choe et al. (CVPR 2020) is: CAM at feature resolution (no ReLU)
-> bicubic upsampling to the image size -> per-map min-max normalisation; ``cams_to_score_maps``
does exactly that.

Every function here works on CPU and GPU alike, is batch-first and needs no forward hooks: models
return ``(logits, features)`` with ``features`` a dict of named feature maps.
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CamInputError",
    "DegenerateMapWarning",
    "class_activation_maps",
    "topk_classes",
    "grad_cam",
    "normalize_maps",
    "upsample_maps",
    "cams_to_score_maps",
]

ClassSpec = int | Sequence[int] | np.ndarray | torch.Tensor | None


class CamInputError(ValueError):
    """A tensor given to a CAM function has the wrong shape, dtype or values."""


class DegenerateMapWarning(UserWarning):
    """Some score maps were constant or not finite and were replaced by zeros."""


def _class_index(classes: ClassSpec, num_images: int, num_classes: int,
                 device: torch.device) -> torch.Tensor:
    """Checks class indices and returns them as an int64 tensor on ``device``.

    Returns a 0-d tensor for a single class, ``(N,)`` for one class per image or ``(N, k)``
    for ``k`` classes per image.
    """
    idx = torch.as_tensor(classes, device=device)
    if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.dtype.is_complex:
        raise CamInputError(
            f"classes must hold integer class indices, got dtype {idx.dtype}; pass e.g. "
            "labels.long() or topk_classes(logits, k).")
    if idx.ndim > 2 or (idx.ndim >= 1 and idx.shape[0] != num_images):
        raise CamInputError(
            f"classes has shape {tuple(idx.shape)}; expected an int, ({num_images},) for one "
            f"class per image or ({num_images}, k) for k classes per image.")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= num_classes):
        raise CamInputError(
            f"classes holds indices in [{int(idx.min())}, {int(idx.max())}] but the classifier "
            f"has {num_classes} classes (valid indices 0..{num_classes - 1}).")
    return idx.long()


def class_activation_maps(features: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None = None,
                          classes: ClassSpec = None) -> torch.Tensor:
    """Class activation maps ``W_c . psi(x)_ij (+ b_c)`` (Zhou et al. 2016).

    For a GAP network ``logits = W @ features.mean((2, 3)) + b``, so
    ``class_activation_maps(features, W, b).mean((2, 3))`` equals the logits. The reference
    evaluation of Choe et al. (CVPR 2020) takes the channel *mean* instead of the sum; the factor
    ``1 / K`` disappears under min-max normalisation.

    Args:
        features: ``(N, K, h, w)`` float feature maps ``psi(x)`` before pooling.
        weight: ``(C, K)`` weight of the linear classifier (``fc.weight``).
        bias: optional ``(C,)`` classifier bias, added to every cell.
        classes: which maps to compute. ``None``: all ``C`` classes; an ``int``: that class for
            every image; an ``(N,)`` integer tensor: one class per image (e.g. the labels);
            an ``(N, k)`` integer tensor: ``k`` classes per image (e.g. ``topk_classes``).

    Returns:
        Float tensor on the device of ``features``: ``(N, C, h, w)`` for ``classes=None``,
        ``(N, h, w)`` for an int or ``(N,)`` classes, ``(N, k, h, w)`` for ``(N, k)`` classes.

    Raises:
        CamInputError: on mismatched shapes or out-of-range class indices.
    """
    if features.ndim != 4:
        raise CamInputError(
            f"features has shape {tuple(features.shape)}; expected (N, K, h, w). Pass the "
            "feature map before global pooling.")
    if weight.ndim != 2 or weight.shape[1] != features.shape[1]:
        raise CamInputError(
            f"weight has shape {tuple(weight.shape)} and features {tuple(features.shape)}; "
            f"expected weight (C, {features.shape[1]}), the classifier's fc.weight.")
    num_classes = weight.shape[0]
    if bias is not None and tuple(bias.shape) != (num_classes,):
        raise CamInputError(
            f"bias has shape {tuple(bias.shape)}; expected ({num_classes},) to match weight "
            f"{tuple(weight.shape)}.")
    if classes is None:
        maps = torch.einsum("nkhw,ck->nchw", features, weight)
        if bias is not None:
            maps = maps + bias[None, :, None, None]
        return maps
    idx = _class_index(classes, features.shape[0], num_classes, weight.device)
    w = weight[idx]
    if idx.ndim == 0:
        maps = torch.einsum("nkhw,k->nhw", features, w)
    elif idx.ndim == 1:
        maps = torch.einsum("nkhw,nk->nhw", features, w)
    else:
        maps = torch.einsum("nkhw,njk->njhw", features, w)
    if bias is not None:
        maps = maps + bias[idx][..., None, None]
    return maps


def topk_classes(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest-scoring classes per image, best first.

    Args:
        logits: ``(N, C)`` float class scores (logits or probabilities).
        k: number of classes, ``1 <= k <= C``.

    Returns:
        ``(N, k)`` int64 tensor of class indices, sorted by decreasing score.

    Raises:
        CamInputError: if ``logits`` is not 2-D or ``k`` is outside ``[1, C]``.
    """
    if logits.ndim != 2:
        raise CamInputError(
            f"logits has shape {tuple(logits.shape)}; expected (N, C).")
    if not 1 <= k <= logits.shape[1]:
        raise CamInputError(
            f"k = {k} but logits has {logits.shape[1]} classes; choose 1 <= k <= "
            f"{logits.shape[1]}.")
    return torch.topk(logits, k, dim=1, largest=True, sorted=True).indices


def grad_cam(model_or_fn: Callable[[torch.Tensor], tuple[torch.Tensor, Mapping[str, torch.Tensor]]],
             images: torch.Tensor, classes: ClassSpec, feature_key: str) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., ICCV 2017): ``ReLU(sum_k alpha_k A_k)``.

    ``alpha_k = mean_ij d logit_c / d A_k(i, j)`` is taken with ``torch.autograd.grad`` on the
    feature map the model returns, so no hooks are registered and no parameter ``.grad`` is
    touched. For a GAP + linear head ``d logit_c / d A_k(i, j) = W_ck / (h w)``, hence
    ``grad_cam == relu(class_activation_maps(A, W, classes=c)) / (h * w)``.

    The gradients of all images are taken in one backward pass of the summed class scores; this
    equals per-image gradients only when images do not interact, so put models with batch
    normalisation in ``eval()`` mode first.

    Args:
        model_or_fn: callable ``images -> (logits (N, C), features dict)``.
        images: ``(N, 3, H, W)`` float batch, already normalised for the model.
        classes: class per image: an ``int``, an ``(N,)`` integer tensor, or ``None`` for the
            top-1 predicted class.
        feature_key: key of the ``(N, K, h, w)`` feature map in the returned dict.

    Returns:
        ``(N, h, w)`` float tensor (detached) on the device of the features, ``>= 0``.

    Raises:
        CamInputError: if the key is missing, the feature map is not 4-D or not connected to the
            logits, or the classes are malformed.
    """
    with torch.enable_grad():
        # Inputs that require grad keep a graph even for a frozen model or under no_grad.
        inputs = images.detach().requires_grad_(True)
        logits, features = model_or_fn(inputs)
        if feature_key not in features:
            raise CamInputError(
                f"feature_key {feature_key!r} is not among the model's features "
                f"{sorted(features)}; pass one of those keys.")
        acts = features[feature_key]
        if acts.ndim != 4:
            raise CamInputError(
                f"features[{feature_key!r}] has shape {tuple(acts.shape)}; expected "
                "(N, K, h, w).")
        if not acts.requires_grad:
            raise CamInputError(
                f"features[{feature_key!r}] is not connected to the input graph (detached?); "
                "return the feature tensor the logits are computed from.")
        if classes is None:
            idx = logits.argmax(dim=1)
        else:
            idx = _class_index(classes, logits.shape[0], logits.shape[1], logits.device)
            if idx.ndim == 2:
                raise CamInputError(
                    f"classes has shape {tuple(idx.shape)}; grad_cam takes one class per "
                    "image: an int or an (N,) tensor.")
            if idx.ndim == 0:
                idx = idx.expand(logits.shape[0])
        score = logits.gather(1, idx[:, None]).sum()
        (grads,) = torch.autograd.grad(score, acts)
    alpha = grads.mean(dim=(2, 3))
    return torch.relu(torch.einsum("nkhw,nk->nhw", acts.detach(), alpha))


def _as_float_tensor(maps: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(maps)) if isinstance(maps, np.ndarray) else maps
    if not isinstance(t, torch.Tensor):
        raise CamInputError(f"{name} must be a numpy array or torch tensor, got {type(maps)}.")
    if t.ndim < 2 or t.shape[-1] == 0 or t.shape[-2] == 0:
        raise CamInputError(
            f"{name} has shape {tuple(t.shape)}; expected (..., H, W) with H, W >= 1, e.g. "
            "(N, H, W).")
    if not t.dtype.is_floating_point:
        t = t.float()
    return t


def normalize_maps(maps: np.ndarray | torch.Tensor, mode: str = "minmax",
                   eps: float = 0.0) -> np.ndarray | torch.Tensor:
    """Normalises every map to ``[0, 1]`` on its own.

    ``"minmax"`` maps ``min -> 0`` and ``max -> 1`` as ``(m - min) / (max - min)``, bit for bit
    the operation of the reference evaluation (Choe et al. 2020). ``"max"`` applies a ReLU and
    divides by the maximum (the Grad-CAM convention).

    A map that cannot be normalised becomes all zeros, as in the reference: a map holding NaN or
    inf (or whose range overflows the dtype), and a map whose range (``"minmax"``) or positive
    maximum (``"max"``) is ``<= eps``, i.e. constant or all-zero maps for the default
    ``eps = 0``, which reproduces the reference's exact-equality test. One
    ``DegenerateMapWarning`` then gives the exact count of each kind, so nothing downstream ever
    sees a NaN.

    Args:
        maps: ``(..., H, W)`` float array or tensor, typically ``(N, H, W)``; integer input is
            converted to float32.
        mode: ``"minmax"`` or ``"max"``.
        eps: a map is degenerate when its range (or maximum) is ``<= eps``.

    Returns:
        Same type, shape, device and float dtype as the input, values in ``[0, 1]``.

    Raises:
        CamInputError: on an unknown mode or an input with fewer than 2 dimensions.
    """
    if mode not in ("minmax", "max"):
        raise CamInputError(f"mode = {mode!r}; expected 'minmax' or 'max'.")
    is_numpy = isinstance(maps, np.ndarray)
    t = _as_float_tensor(maps, "maps")
    flat = t.reshape(-1, t.shape[-2] * t.shape[-1])
    finite = torch.isfinite(flat).all(dim=1)
    safe = torch.where(finite[:, None], flat, torch.zeros((), dtype=flat.dtype, device=flat.device))
    if mode == "minmax":
        low = safe.amin(dim=1, keepdim=True)
        spread = safe.amax(dim=1, keepdim=True) - low
        shifted = safe - low
    else:
        shifted = safe.clamp_min(0)
        spread = shifted.amax(dim=1, keepdim=True)
    finite = finite & torch.isfinite(spread[:, 0])
    ok = finite & (spread[:, 0] > eps)
    out = shifted / torch.where(ok[:, None], spread, torch.ones_like(spread))
    out = torch.where(ok[:, None], out, torch.zeros((), dtype=out.dtype, device=out.device))
    num_bad = int((~ok).sum())
    if num_bad:
        num_nonfinite = int((~finite).sum())
        num_zero = int(((~ok) & finite & (safe == 0).all(dim=1)).sum())
        kind = "constant" if mode == "minmax" else "without a positive value"
        warnings.warn(
            f"normalize_maps: {num_bad} of {flat.shape[0]} maps set to zeros: "
            f"{num_nonfinite} hold NaN or inf, {num_bad - num_nonfinite} are {kind} "
            f"(range <= eps = {eps}; {num_zero} of them all zero).",
            DegenerateMapWarning, stacklevel=2)
    out = out.reshape(t.shape)
    return out.numpy() if is_numpy else out


def upsample_maps(maps: np.ndarray | torch.Tensor, size: tuple[int, int],
                  mode: str = "bicubic") -> np.ndarray | torch.Tensor:
    """Resizes maps with ``torch.nn.functional.interpolate(align_corners=False)``.

    Bicubic interpolation (a = -0.75) with ``align_corners=False`` reproduces OpenCV's
    ``cv2.resize(..., interpolation=cv2.INTER_CUBIC)`` used by the reference evaluation up to
    float rounding (14 -> 224: largest difference 5e-7 in float32, 1e-15 in float64, checked in
    the tests); bilinear matches ``INTER_LINEAR`` likewise. Bicubic output can overshoot the
    input range; normalise after resizing, as the reference does.

    Args:
        maps: ``(..., h, w)`` float array or tensor, typically ``(N, h, w)``.
        size: target ``(H, W)``.
        mode: ``"bicubic"`` or ``"bilinear"``.

    Returns:
        Same type, device and float dtype as the input, shape ``(..., H, W)``.

    Raises:
        CamInputError: on an unknown mode, a bad size or an input with fewer than 2 dims.
    """
    if mode not in ("bicubic", "bilinear"):
        raise CamInputError(f"mode = {mode!r}; expected 'bicubic' or 'bilinear'.")
    if len(size) != 2 or min(size) < 1:
        raise CamInputError(f"size = {size!r}; expected (H, W) with positive integers.")
    is_numpy = isinstance(maps, np.ndarray)
    t = _as_float_tensor(maps, "maps")
    lead = t.shape[:-2]
    flat = t.reshape(-1, 1, t.shape[-2], t.shape[-1])
    out = F.interpolate(flat, size=(int(size[0]), int(size[1])), mode=mode, align_corners=False)
    out = out.reshape(*lead, int(size[0]), int(size[1]))
    return out.numpy() if is_numpy else out


def cams_to_score_maps(features: torch.Tensor, weight: torch.Tensor, classes: ClassSpec,
                       size: tuple[int, int], mode: str = "bicubic",
                       as_numpy: bool = False) -> np.ndarray | torch.Tensor:
    """The reference score-map chain: CAM -> upsample -> per-map min-max normalisation.

    The CAM is taken at feature resolution without bias and without ReLU, resized to ``size``
    and then min-max normalised (constant or NaN maps become zeros with a
    ``DegenerateMapWarning``), as in the evaluation of Choe et al. (CVPR 2020).

    Args:
        features: ``(N, K, h, w)`` float feature maps before pooling.
        weight: ``(C, K)`` classifier weight.
        classes: as in ``class_activation_maps`` (``int``, ``(N,)`` or ``(N, k)``; ``None`` for
            all classes).
        size: image size ``(H, W)``.
        mode: interpolation, ``"bicubic"`` (reference) or ``"bilinear"``.
        as_numpy: return a CPU numpy array instead of a tensor.

    Returns:
        Float maps in ``[0, 1]``: ``(N, H, W)`` for one class per image, ``(N, k, H, W)`` or
        ``(N, C, H, W)`` otherwise, with the dtype of ``features``.
    """
    with torch.no_grad():
        cams = class_activation_maps(features, weight, classes=classes)
        maps = normalize_maps(upsample_maps(cams, size, mode=mode), mode="minmax")
    return maps.cpu().numpy() if as_numpy else maps
