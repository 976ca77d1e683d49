"""Inference: the score maps of a model, by the registered name of the map.

A score map is named (``"cam"``, ``"recombined"``, ...; :func:`wsolkit.methods.available_maps`)
and computed by the one function registered under that name, so a cached result keyed by the
name can never come from another function. The chain is the reference one of Choe et al.
(CVPR 2020): the raw map at feature resolution, bicubic upsampling to the image, per-map min-max
normalisation.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch

from wsolkit.cam import normalize_maps, upsample_maps
from wsolkit.methods.registry import score_map

__all__ = ["predict_maps"]


def _normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean_t) / std_t


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def stage_features(model: torch.nn.Module, images: torch.Tensor, *, mean: Sequence[float],
                   std: Sequence[float]) -> dict[str, torch.Tensor]:
    """Every stage's output for a few images, in evaluation mode (plug-ins inactive).

    Args:
        model: a ``wsolkit.models`` network.
        images: ``(N, 3, S, S)`` uint8.
        mean, std: the normalisation the model was trained with.

    Returns:
        ``{stage name: (N, K, h, w) float32}`` on the CPU, and ``"cam"``.
    """
    device = next(model.parameters()).device
    _, features = model.eval()(_normalise(images.to(device), mean, std))
    return {name: value.float().cpu() for name, value in features.items()}


@torch.no_grad()
def predict_maps(model: torch.nn.Module, images: torch.Tensor, *, classes: torch.Tensor | None = None,
                 mean: Sequence[float], std: Sequence[float], map_name: str = "cam",
                 batch_size: int = 256, device: torch.device | str | None = None,
                 with_features: bool = False) -> Iterator[tuple]:
    """Yields ``(rows, logits, score_maps)`` batch by batch (``with_features``: and the last
    feature maps, ``features["cam"]``).

    Args:
        model: a ``wsolkit.models`` network (returns ``(logits, features)``).
        images: ``(N, 3, S, S)`` uint8.
        classes: ``(N,)`` the class whose map to take per image; ``None``: the top-1 prediction.
        mean, std: the normalisation the model was trained with.
        map_name: the registered score map (:func:`wsolkit.methods.available_maps`), default
            the CAM.
        batch_size: images per forward pass.
        device: default CUDA when available.
        with_features: also yield ``(B, K, h, w)`` float32 ``features["cam"]`` on the CPU (the
            two-stage search of :mod:`wsolkit.methods.rcam` reads them).

    Yields:
        the slice of rows, ``(B, C)`` float32 logits on the CPU and ``(B, S, S)`` float32 score
        maps in ``[0, 1]`` on the CPU (bicubic upsampling, then min-max normalisation).
    """
    map_fn = score_map(map_name)
    device = torch.device(device) if device is not None else _default_device()
    model = model.to(device).eval()
    size = tuple(images.shape[-2:])
    for start in range(0, images.shape[0], batch_size):
        rows = slice(start, min(start + batch_size, images.shape[0]))
        batch = _normalise(images[rows].to(device), mean, std)
        logits, features = model(batch)
        chosen = logits.argmax(1) if classes is None else classes[rows].to(device)
        raw = map_fn(model, features, chosen).float()
        with warnings.catch_warnings():
            # A constant map is rare but legitimate (a dead class); it becomes zeros and the
            # count is reported once per evaluation by evaluate_localization.
            warnings.simplefilter("ignore")
            maps = normalize_maps(upsample_maps(raw, size, mode="bicubic"), mode="minmax")
        if with_features:
            yield rows, logits.float().cpu(), maps.cpu(), features["cam"].float().cpu()
        else:
            yield rows, logits.float().cpu(), maps.cpu()
