"""Batches on the device: in-memory data augmented there, or a ``Dataset`` through a ``DataLoader``.

Both yield ``(images, labels, targets, batch)``: normalised images (channels-last where asked),
labels, the per-image targets of the run's methods moved by the same flips and crops as the
images, and the collated batch of the ``Dataset`` path (``None`` in memory). A method's batch
sampler decides which images form each batch; by default it is a fresh permutation per epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from wsolkit.methods.registry import BatchSampler

from .config import ConfigError, TrainConfig
from .data import TensorImages
from .distributed import STREAM_AUGMENT, STREAM_LOADER, STREAM_ORDER, Processes, derive_seed
from .targets import TARGET_KEY_PREFIX

__all__ = ["Normalize", "make_batches"]



class Normalize:
    def __init__(self, config: TrainConfig, device: torch.device, channels_last: bool) -> None:
        self.enabled = config.normalize
        self.mean = torch.tensor(config.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(config.std, device=device).view(1, 3, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            images = (images - self.mean) / self.std
        return images.contiguous(memory_format=self.memory_format)


class _TensorBatches:
    """Batches of a :class:`TensorImages`, built and augmented on the device."""

    def __init__(self, data: TensorImages, config: TrainConfig, device: torch.device, d: Processes,
                 normalize: Normalize, train: bool, sampler: BatchSampler | None = None,
                 targets: Sequence[str] = ()) -> None:
        if data.image_size != (config.image_size, config.image_size):
            raise ConfigError(
                f"TensorImages of size {data.image_size} but TrainConfig.image_size = {config.image_size}; "
                "preload the data at the configured size or change the configuration."
            )
        if len(data) and int(data.labels.max()) >= config.num_classes:
            raise ConfigError(
                f"TensorImages has label {int(data.labels.max())} but TrainConfig.num_classes = {config.num_classes}."
            )
        missing = sorted(set(targets) - set(data.targets))
        if train and missing:
            raise ConfigError(
                f"the configuration's methods train against the per-image target(s) {missing}, "
                f"which the TensorImages lacks (it has {sorted(data.targets)}); build the data with "
                "preload(dataset, size, targets=method_targets(config)) or "
                "TensorImages.with_targets(method_targets(config)).")
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.targets = {name: data.targets[name].to(device) for name in targets} if train else {}
        self.config, self.device, self.d, self.normalize, self.train = config, device, d, normalize, train
        self.sampler = sampler if train else None
        n = len(data)
        self.per_rank = n // d.world if train else len(range(d.rank, n, d.world))
        if self.sampler is not None:
            self.steps = self.sampler.steps(data.labels, d.world * config.batch_size)
        else:
            self.steps = self.per_rank // config.batch_size if train else math.ceil(self.per_rank / config.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict, Any]]:
        n, b, cfg = len(self.labels), self.config.batch_size, self.config
        if self.sampler is not None:
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, 0, STREAM_ORDER))
            # The sampler lays out global batches; this process takes its block of each.
            world_b = self.d.world * b
            order = self.sampler.order(self.labels, world_b, g).view(-1, self.d.world, b)
            order = order[:, self.d.rank].reshape(-1)
            aug = torch.Generator(device=self.device).manual_seed(
                derive_seed(cfg.seed, epoch, self.d.rank, STREAM_AUGMENT))
        elif self.train:
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, 0, STREAM_ORDER))
            # One permutation shared by all ranks; rank r takes every world-th index, so the union
            # of the ranks' step-s batches is the single-process step-s batch of size world * b.
            order = torch.randperm(n, generator=g)[: self.per_rank * self.d.world][self.d.rank :: self.d.world]
            aug = torch.Generator(device=self.device).manual_seed(
                derive_seed(cfg.seed, epoch, self.d.rank, STREAM_AUGMENT))
        else:
            order = torch.arange(self.d.rank, n, self.d.world)
        order = order.to(self.device)
        for s in range(self.steps):
            idx = order[s * b:(s + 1) * b]
            images = self.images[idx].float().div_(255)
            targets = {name: t[idx].float() for name, t in self.targets.items()}
            if self.train:
                images, targets = self._augment(images, targets, aug)
            yield self.normalize(images), self.labels[idx], targets, None

    def _augment(self, images: torch.Tensor, targets: dict[str, torch.Tensor],
                 g: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # The targets take the same flips and crops as the images, from the same draws.
        n = images.shape[0]
        cfg = self.config
        flip = (torch.rand(n, generator=g, device=self.device) < 0.5) if cfg.hflip else None
        if cfg.crop_scale is None:
            if flip is not None:
                images = torch.where(flip.view(n, 1, 1, 1), images.flip(3), images)
                targets = {k: torch.where(flip.view(n, 1, 1, 1), t.flip(3), t) for k, t in targets.items()}
            return images, targets
        # Square crop of area fraction a ~ U[crop_scale, 1] at a uniform position, resized back
        # with one batched affine grid sample; the flip is folded into the x scale.
        area = cfg.crop_scale + (1 - cfg.crop_scale) * torch.rand(n, generator=g, device=self.device)
        side = area.sqrt()
        tx = (1 - side) * (2 * torch.rand(n, generator=g, device=self.device) - 1)
        ty = (1 - side) * (2 * torch.rand(n, generator=g, device=self.device) - 1)
        sx = side if flip is None else torch.where(flip, -side, side)
        theta = torch.zeros(n, 2, 3, device=self.device)
        theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, tx, side, ty
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        targets = {k: F.grid_sample(t, grid, mode="bilinear", padding_mode="border", align_corners=False)
                   for k, t in targets.items()}
        return images, targets


def _collate_default(samples):
    if isinstance(samples[0], Mapping):
        from wsolkit.data import collate  # imported here: the dataset modules are not needed otherwise

        return collate(samples)
    return torch.utils.data.default_collate(samples)


def _split_batch(batch) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, Mapping):
        return batch["image"], batch["label"]
    return batch[0], batch[1]


class _DatasetBatches:
    """Batches of a map-style ``Dataset`` through a ``DataLoader`` built per epoch.

    A loader per epoch, with its worker seeds drawn from a ``(seed, epoch, rank)`` generator,
    makes the dataset's random transforms of epoch ``e`` the same in a resumed run (persistent
    workers would carry their random streams over from earlier epochs).
    """

    def __init__(self, data, config: TrainConfig, device: torch.device, d: Processes, normalize: Normalize,
                 train: bool, collate_fn: Callable | None, sampler: BatchSampler | None = None,
                 targets: Sequence[str] = ()) -> None:
        self.data, self.config, self.device, self.d = data, config, device, d
        self.normalize, self.train = normalize, train
        self.collate_fn = collate_fn or _collate_default
        self.targets = tuple(targets) if train else ()
        self.batch_sampler = sampler if train else None
        n = len(data)
        if self.batch_sampler is not None:
            labels = getattr(data, "labels", None)
            if labels is None:
                raise ConfigError(f"the method's batch sampler needs the dataset's labels; "
                                  f"{type(data).__name__} has no .labels.")
            self.sampler_labels = torch.as_tensor(list(labels), dtype=torch.long)
            self.steps = self.batch_sampler.steps(self.sampler_labels, d.world * config.batch_size)
        elif train:
            self.sampler = torch.utils.data.DistributedSampler(
                data, num_replicas=d.world, rank=d.rank, shuffle=True, seed=config.seed, drop_last=True)
            self.steps = len(self.sampler) // config.batch_size
        else:
            # No padding (DistributedSampler would repeat samples): each rank its strided share.
            self.sampler = list(range(d.rank, n, d.world))
            self.steps = math.ceil(len(self.sampler) / config.batch_size)
        self.checked = False

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, dict, Any]]:
        cfg = self.config
        g = torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, self.d.rank, STREAM_LOADER))
        if self.batch_sampler is not None:
            order_g = torch.Generator().manual_seed(derive_seed(cfg.seed, epoch, 0, STREAM_ORDER))
            b = cfg.batch_size
            order = self.batch_sampler.order(self.sampler_labels, self.d.world * b, order_g)
            blocks = order.view(-1, self.d.world, b)[:, self.d.rank].tolist()
            loader = torch.utils.data.DataLoader(
                self.data, batch_sampler=blocks, num_workers=cfg.num_workers, collate_fn=self.collate_fn,
                pin_memory=self.device.type == "cuda", generator=g)
        else:
            if self.train:
                self.sampler.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(
                self.data, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=cfg.num_workers,
                collate_fn=self.collate_fn, pin_memory=self.device.type == "cuda", drop_last=self.train,
                generator=g,
            )
        for batch in loader:
            images, labels = _split_batch(batch)
            if not self.checked:
                self._check(images, labels, batch)
            images = images.to(self.device, non_blocking=True)
            if images.dtype == torch.uint8:
                images = images.float().div_(255)
            targets = {name: torch.stack(batch[TARGET_KEY_PREFIX + name]).to(self.device).float()
                       for name in self.targets}
            yield self.normalize(images), labels.to(self.device, non_blocking=True).long(), targets, batch

    def _check(self, images: torch.Tensor, labels: torch.Tensor, batch) -> None:
        cfg = self.config
        missing = [name for name in self.targets
                   if not isinstance(batch, Mapping) or TARGET_KEY_PREFIX + name not in batch]
        if missing:
            raise ConfigError(
                f"the configuration's methods train against the per-image target(s) {missing}, "
                "which the dataset's samples lack; wrap the dataset (built without a transform) as "
                "wsolkit.train.targets.WithTargets(dataset, method_targets(config), transform).")
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, cfg.image_size, cfg.image_size):
            raise ConfigError(
                f"the dataset gives image batches of shape {tuple(images.shape)}, expected "
                f"(N, 3, {cfg.image_size}, {cfg.image_size}) for TrainConfig.image_size = {cfg.image_size}."
            )
        if cfg.normalize and images.is_floating_point() and (images.min() < 0 or images.max() > 1):
            raise ConfigError(
                f"the dataset gives images with values in [{float(images.min()):.3f}, {float(images.max()):.3f}] "
                "but TrainConfig.normalize is True, which expects [0, 1] images: set normalize=False "
                "(the dataset's transform normalises already) or build the transform with normalize=False."
            )
        if int(labels.max()) >= cfg.num_classes:
            raise ConfigError(
                f"the dataset has label {int(labels.max())} but TrainConfig.num_classes = {cfg.num_classes}."
            )
        self.checked = True


def make_batches(data, config: TrainConfig, device: torch.device, d: Processes, normalize: Normalize,
                 train: bool, collate_fn: Callable | None = None, sampler: BatchSampler | None = None,
                 targets: Sequence[str] = ()):
    """The batches of ``data``: ``.steps`` per epoch and ``.epoch(e)`` yielding
    ``(images, labels, targets, batch)`` on the device, normalised, augmented when ``train``."""
    if isinstance(data, TensorImages):
        return _TensorBatches(data, config, device, d, normalize, train, sampler, targets)
    if isinstance(data, torch.utils.data.Dataset) or hasattr(data, "__getitem__"):
        return _DatasetBatches(data, config, device, d, normalize, train, collate_fn, sampler, targets)
    raise TypeError(f"training data must be a TensorImages or a map-style Dataset, got {type(data).__name__}.")
