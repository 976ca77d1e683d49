"""The reference rows Choe et al. (CVPR 2020) put beside every WSOL method.

* :func:`center_gaussian_maps`: the same isotropic Gaussian at the image centre for every
  image, its width chosen on the full-supervision split. Whatever a method localizes beyond it
  is more than "objects tend to sit in the middle".
* :func:`mask_upper_bound_maps`: each image's true mask (filled ground-truth boxes where the
  split has no masks) averaged onto the CAM's grid and upsampled like a CAM: the best any map of
  that resolution can do.
* :class:`FewShotLocalizer` and :func:`train_few_shot`: the few-shot fully supervised
  baseline, the same backbone trained on the full-supervision split's boxes (a per-cell
  foreground score, binary cross-entropy against each cell's share of box pixels), the
  localization labels a WSOL method may only choose hyper-parameters with. Its runs are cached
  in the run folder like a chapter's (written atomically, resumed after an interruption, read
  back with ``weights_only=True``).
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from wsolkit.cam import normalize_maps, upsample_maps
from wsolkit.evaluation import LocalizationSet, evaluate_maps, oracle_maps
from wsolkit.evaluation.cache import code_fingerprint
from wsolkit.io import atomic_save
from wsolkit.models import build_model
from wsolkit.train.config import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["CENTER_SIGMAS", "FEW_SHOT_FORMAT", "FewShotLocalizer", "box_masks", "cam_grid",
           "center_gaussian_maps", "evaluate_reference", "few_shot_config", "few_shot_maps",
           "load_few_shot", "mask_upper_bound_maps", "train_few_shot"]

#: The Gaussian widths (standard deviation as a fraction of the image side) tried on the
#: full-supervision split.
CENTER_SIGMAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0)
FEW_SHOT_FORMAT = "wsolkit-few-shot-localizer-1"


def center_gaussian_maps(count: int, size: int, sigma: float) -> torch.Tensor:
    """``(count, size, size)`` float32: one centred Gaussian of standard deviation
    ``sigma * size``, min-max normalised, repeated."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"center_gaussian_maps: sigma {sigma!r}; expected a positive number "
                         "(a fraction of the image side).")
    axis = (torch.arange(size, dtype=torch.float64) + 0.5 - size / 2) / (sigma * size)
    gaussian = torch.exp(-0.5 * (axis[:, None] ** 2 + axis[None, :] ** 2))
    gaussian = normalize_maps(gaussian[None], mode="minmax")[0].float()
    return gaussian.expand(count, size, size).contiguous()


def box_masks(data: LocalizationSet) -> torch.Tensor:
    """``(N, S, S)`` uint8: the union of each image's ground-truth boxes, filled (the boxes
    are inclusive pixel corners ``x0, y0, x1, y1``, as the reference draws them)."""
    masks = torch.zeros(len(data), data.size, data.size, dtype=torch.uint8)
    for i, boxes in enumerate(data.boxes):
        for x0, y0, x1, y1 in np.asarray(boxes).reshape(-1, 4):
            left, top = max(int(round(x0)), 0), max(int(round(y0)), 0)
            right, bottom = min(int(round(x1)), data.size - 1), min(int(round(y1)), data.size - 1)
            masks[i, top:bottom + 1, left:right + 1] = 1
    return masks


def mask_upper_bound_maps(data: LocalizationSet, grid: int) -> tuple[torch.Tensor, str]:
    """``(maps, source)``: the true masks (``"object masks"``) or, where the split has none,
    the filled boxes (``"box masks"``), averaged onto a ``grid x grid`` CAM grid."""
    if data.masks is not None:
        return oracle_maps(data.masks, grid), "object masks"
    return oracle_maps(box_masks(data), grid), "box masks"


def cam_grid(run_dir: str | os.PathLike, size: int) -> int:
    """The side of a run's CAM at ``size`` px (8 for the benchmark's networks at 64 px)."""
    from wsolkit.runs import load_model

    model = load_model(run_dir).eval()
    with torch.no_grad():
        return int(model(torch.zeros(1, 3, size, size))[1]["cam"].shape[-1])


class FewShotLocalizer(nn.Module):
    """A backbone's last feature map and a 1x1 convolution: a foreground logit per CAM cell."""

    def __init__(self, backbone: str, model_kwargs: Mapping | None = None) -> None:
        super().__init__()
        self.backbone = build_model(backbone, 1, **dict(model_kwargs or {}))
        with torch.no_grad():
            channels = self.backbone.eval()(torch.zeros(1, 3, 64, 64))[1]["cam"].shape[1]
        self.head = nn.Conv2d(int(channels), 1, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, S, S)`` normalised images to ``(N, h, w)`` foreground logits."""
        return self.head(self.backbone(images)[1]["cam"])[:, 0]


def _normalised(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def few_shot_config(layout: str, fullsup: LocalizationSet, seed: int, *, backbone: str,
                    model_kwargs: Mapping, epochs: int,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    batch_size: int = 32, lr: float = 0.05) -> dict:
    """Everything a few-shot run depends on: the run cache's configuration (and hash)."""
    return {"kind": "few-shot fully supervised localizer", "layout": layout,
            "fullsup": fullsup.fingerprint(), "boxes": _boxes_digest(fullsup),
            "size": fullsup.size, "seed": int(seed), "backbone": backbone,
            "model_kwargs": dict(model_kwargs), "epochs": int(epochs),
            "batch_size": int(batch_size), "lr": float(lr), "optimizer": "sgd nesterov 0.9",
            "weight_decay": 5e-4, "schedule": "cosine", "augmentation": "horizontal flips",
            "mean": list(mean), "std": list(std),
            "code": code_fingerprint([sys.modules[__name__]])}


def _boxes_digest(data: LocalizationSet) -> str:
    import hashlib

    digest = hashlib.sha256()
    for boxes in data.boxes:
        digest.update(np.ascontiguousarray(boxes, dtype=np.float32).tobytes())
        digest.update(b"|")
    return digest.hexdigest()[:12]


def _checkpoint_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise RuntimeError(f"{path}: cannot be read as a few-shot checkpoint "
                           f"({type(err).__name__}: {err}); delete it to train afresh.") from err
    if not isinstance(state, dict) or state.get("format") != FEW_SHOT_FORMAT:
        raise RuntimeError(f"{path}: not a {FEW_SHOT_FORMAT} checkpoint; delete it to train "
                           "afresh.")
    return state


def _fit(run_dir: Path, config: Mapping, fullsup: LocalizationSet, grid: int) -> dict:
    torch.manual_seed(config["seed"])
    model = FewShotLocalizer(config["backbone"], config["model_kwargs"])
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=0.9,
                                nesterov=True, weight_decay=config["weight_decay"])
    steps = math.ceil(len(fullsup) / config["batch_size"]) * config["epochs"]
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    images = _normalised(fullsup.images, config["mean"], config["std"])
    targets = nn.functional.adaptive_avg_pool2d(box_masks(fullsup)[:, None].float(), grid)[:, 0]
    checkpoint, start, losses = run_dir / "checkpoint.pt", 0, []
    if checkpoint.exists():  # an interrupted run resumes after its last finished epoch
        state = _checkpoint_state(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["scheduler"])
        start, losses = int(state["epoch"]), list(state["losses"])
    generator = torch.Generator().manual_seed(config["seed"])
    for epoch in range(config["epochs"]):
        order = torch.randperm(len(fullsup), generator=generator)
        flips = torch.rand(len(fullsup), generator=generator) < 0.5
        if epoch < start:
            continue  # the generator still draws, so a resumed run sees the same batches
        model.train()
        total = 0.0
        for batch in order.split(config["batch_size"]):
            x, y = images[batch].clone(), targets[batch].clone()
            flip = flips[batch]
            x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
            loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{run_dir.name}: the loss became {loss.item()} in "
                                         f"epoch {epoch + 1}; lower lr ({config['lr']}).")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(fullsup))
        atomic_save({"format": FEW_SHOT_FORMAT, "epoch": epoch + 1, "config": dict(config),
                     "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": schedule.state_dict(), "losses": losses}, checkpoint)
    return {"final_loss": losses[-1], "losses": losses, "images": len(fullsup)}


def train_few_shot(layout: str, fullsup: LocalizationSet, seed: int, *, grid: int,
                   runs_root: str | os.PathLike | None = None, **settings):
    """The few-shot fully supervised baseline of one seed, from the run cache or trained now.

    Args:
        layout: the dataset layout (part of the run's name).
        fullsup: the full-supervision split it trains on (its images and boxes).
        seed: the run's seed.
        grid: the CAM grid its target masks are averaged onto (:func:`cam_grid`).
        runs_root: the run cache (default :func:`wsolkit.profiles.runs_dir`, the chapters').
        **settings: :func:`few_shot_config`'s keywords (backbone, model_kwargs, epochs; mean,
            std, batch_size, lr).

    Returns:
        The :class:`wsolkit.runs.RunRecord`.
    """
    from wsolkit.profiles import runs_dir
    from wsolkit.runs import cached_run

    config = few_shot_config(layout, fullsup, seed, **settings)
    config["grid"] = int(grid)
    return cached_run(f"06_leaderboard-{layout}-fsl-s{seed}", config,
                      lambda run_dir: _fit(Path(run_dir), config, fullsup, grid),
                      runs_root if runs_root is not None else runs_dir())


def load_few_shot(run_dir: str | os.PathLike) -> tuple[FewShotLocalizer, dict]:
    """A trained few-shot localizer and its configuration (``weights_only`` load)."""
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no few-shot checkpoint; train it with train_few_shot.")
    state = _checkpoint_state(path)
    config = state["config"]
    if state["epoch"] != config["epochs"]:
        raise RuntimeError(f"{path}: trained {state['epoch']} of {config['epochs']} epochs; "
                           "run train_few_shot to finish it.")
    model = FewShotLocalizer(config["backbone"], config["model_kwargs"])
    model.load_state_dict(state["model"])
    return model.eval(), config


def few_shot_maps(run_dir: str | os.PathLike, data: LocalizationSet,
                  batch_size: int = 256) -> torch.Tensor:
    """``(N, S, S)`` float32: the few-shot localizer's foreground probabilities, upsampled
    (bicubic) and min-max normalised exactly like a CAM."""
    model, config = load_few_shot(run_dir)
    out = []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            images = _normalised(data.images[start:start + batch_size], config["mean"],
                                 config["std"])
            out.append(torch.sigmoid(model(images)).double())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant map normalises to zeros, and is counted
        maps = normalize_maps(upsample_maps(torch.cat(out), (data.size, data.size)))
    return maps.float()


def evaluate_reference(maps: torch.Tensor, data: LocalizationSet) -> dict:
    """:func:`wsolkit.evaluation.evaluate_maps` with the per-image arrays the protocol reads
    (no classification: a reference has no classifier)."""
    if not torch.isfinite(maps).all():
        raise ValueError("evaluate_reference: the maps hold NaN or infinite values.")
    return evaluate_maps(maps, data)
