"""The training engine every notebook uses: :class:`TrainConfig` and :func:`fit`.

One function trains any :mod:`wsolkit.models` backbone, on the CPU or a GPU, in one process or
data-parallel under ``torchrun``, and resumes exactly where a killed run stopped:

* **Data.** Either a ``torch.utils.data.Dataset`` (sample dicts as in :mod:`wsolkit`'s
  conventions, or ``(image, label)`` tuples) read through a ``DataLoader``, or a
  :class:`TensorImages`: ``uint8`` images and labels held in memory (on the device), batched,
  flipped and cropped there. On small data the per-epoch decoding of image files costs more than
  the model on two CPU cores; :func:`preload` decodes a dataset once into a :class:`TensorImages`.
  Both paths normalise with ``config.mean`` / ``config.std`` on the device.
* **Optimisation.** SGD (momentum, Nesterov), Adam or AdamW with two parameter groups (backbone,
  new head: :func:`wsolkit.models.parameter_groups`); the learning rate follows
  :func:`lr_factor` and is set at every step.
* **Speed.** bf16 autocast on GPUs and on CPUs with native bf16, channels-last memory format on
  GPUs and CPUs (``"auto"``), optional ``torch.compile``.
* **Reproducibility.** The data order, the augmentation and the global random state (dropout,
  ADL, Hide-and-Seek) of epoch ``e`` are all derived from ``(config.seed, e, rank)``, so a run
  resumed at epoch ``e`` needs no pickled random state and ends with the same weights as an
  uninterrupted one. The caller's random state and PyTorch's global flags are restored on return.
* **Checkpoints.** ``run_dir/checkpoint.pt`` after every epoch, written atomically (temporary file
  in the same directory, ``fsync``, ``os.replace``) and holding only tensors and primitives, read
  back with ``torch.load(..., weights_only=True)``; ``run_dir/log.jsonl`` has one JSON line per
  epoch.
* **Distributed.** Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), :func:`fit`
  joins the process group (NCCL on GPUs, Gloo on CPUs), shards the data, wraps the model in
  ``DistributedDataParallel`` and logs, shows progress and writes checkpoints on rank 0 only.
  ``config.batch_size`` is per process: 2 processes of batch ``b`` take the same steps as one
  process of batch ``2b``. Command line: ``torchrun --nproc_per_node 2 -m wsolkit.train
  --config cfg.json --run-dir runs/x --data wsolkit.train:toy_data``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .methods import build_batch_transform, build_plugins
from .models import build_model, parameter_groups, unwrap

__all__ = [
    "CheckpointError",
    "ConfigError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "StepContext",
    "TensorImages",
    "TrainConfig",
    "atomic_save",
    "atomic_write_text",
    "available_losses",
    "cpu_has_native_bf16",
    "evaluate_accuracy",
    "fit",
    "load_checkpoint",
    "lr_factor",
    "main",
    "model_from_config",
    "preload",
    "register_loss",
    "resolved_amp",
    "toy_data",
    "toy_images",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "wsolkit-checkpoint-1"

# Fields that change how fast a run goes but not what it computes; left out of comparisons
# between a checkpoint's configuration and the current one (and of the run cache's hash).
NON_RESULT_FIELDS = ("num_workers",)


class ConfigError(ValueError):
    """A training configuration (or data that does not fit it) is invalid."""


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used to resume this run."""


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

_OPTIMIZERS = ("sgd", "adam", "adamw")
_SCHEDULES = ("constant", "step", "cosine", "sgdr")
_AMP = ("auto", "bf16", "off")


@dataclass
class TrainConfig:
    """Everything that determines a training run; JSON-serialisable (:meth:`to_dict`).

    Attributes:
        model: registry name for :func:`wsolkit.models.build_model`.
        model_kwargs: its options (``pretrained``, ``width``, ``small_input``, ...).
        num_classes: number of classes.
        image_size: side of the (square) training images in pixels.
        epochs: number of epochs.
        batch_size: images per step *per process*.
        optimizer: ``"sgd"`` (with ``momentum``, ``nesterov``), ``"adam"`` or ``"adamw"`` (``betas``).
        lr: learning rate of the backbone parameter group.
        head_lr_mult: the new layers' learning rate is ``lr * head_lr_mult``. ``None`` means 10
            when the backbone starts from ImageNet weights (``model_kwargs["pretrained"]``), as
            fine-tuning recipes of the WSOL literature do (Choe et al., CVPR 2020), and 1 when
            the whole network is trained from scratch.
        weight_decay: L2 penalty on every parameter (``decoupled`` for AdamW).
        schedule: ``"constant"``, ``"step"`` (``lr_gamma`` every ``step_size`` epochs),
            ``"cosine"`` (to ``min_lr_ratio * lr`` at the end) or ``"sgdr"`` (cosine with warm
            restarts, Loshchilov & Hutter 2017: cycles of ``cycle_epochs * cycle_mult**i``
            epochs; with ``cycle_mult=2`` the doubling cycles of Barz & Denzler, VISAPP 2022).
            Every schedule starts with a linear warm-up over ``warmup_epochs`` (may be 0).
        seed: the seed everything random is derived from.
        deterministic: deterministic algorithms (``torch.use_deterministic_algorithms``, cuDNN
            without benchmarking); slower on GPUs.
        amp: ``"auto"`` (bf16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere:
            :func:`resolved_amp`), ``"bf16"`` or ``"off"``. The run's summary records what
            ``"auto"`` became.
        channels_last: ``"auto"`` (on for CUDA and for CPUs, where it measured 1.2x and 1.4x
            faster for the default-profile models, see ``benchmarks/README.md``; off on other
            devices), or a bool.
        compile: wrap the model in ``torch.compile``.
        loss: ``"ce"`` (cross-entropy; option ``label_smoothing``) or a name registered with
            :func:`register_loss`; ``loss_options`` are passed to its factory.
        method: ``{method name: options}`` from :mod:`wsolkit.methods` (plug-ins, batch
            transforms), e.g. ``{"hide_and_seek": {"patch": 16, "p": 0.5}}``.
        mean, std: per-channel normalisation applied on the device to ``[0, 1]`` images.
        normalize: apply it. Set ``False`` for a ``Dataset`` whose transform already normalises
            (``wsolkit.data.train_transform`` does by default); :func:`fit` checks the first batch
            and raises if ``[0, 1]`` images are expected but normalised ones arrive.
        hflip: random horizontal flips (:class:`TensorImages` data only; a ``Dataset`` brings its
            own augmentation).
        crop_scale: if set, a light random-resized crop (:class:`TensorImages` only): a square
            covering a uniform ``[crop_scale, 1]`` fraction of the image area, resized back
            bilinearly.
        val_every: evaluate ``val_data`` every this many epochs (and after the last one).
        num_workers: ``DataLoader`` worker processes (``Dataset`` data only); does not change
            results.
        extra: free-form options for chapters (recorded and hashed, never read by :func:`fit`).
    """

    model: str = "simple_gap"
    model_kwargs: dict = field(default_factory=dict)
    num_classes: int = 10
    image_size: int = 64
    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 5e-4
    head_lr_mult: float | None = None
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_size: int = 30
    lr_gamma: float = 0.1
    cycle_epochs: int = 12
    cycle_mult: int = 2
    min_lr_ratio: float = 0.0
    seed: int = 0
    deterministic: bool = False
    amp: str = "auto"
    channels_last: Any = "auto"
    compile: bool = False
    loss: str = "ce"
    loss_options: dict = field(default_factory=dict)
    method: dict = field(default_factory=dict)
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    normalize: bool = True
    hflip: bool = True
    crop_scale: float | None = None
    val_every: int = 1
    num_workers: int = 0
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ConfigError:
            return ConfigError(f"TrainConfig.{name} = {getattr(self, name)!r}: expected {expected}.")

        for name in ("num_classes", "image_size", "epochs", "batch_size", "step_size",
                     "cycle_epochs", "cycle_mult", "val_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(name, "a positive int")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise bad("num_workers", "an int >= 0")
        if self.optimizer not in _OPTIMIZERS:
            raise bad("optimizer", f"one of {_OPTIMIZERS}")
        if self.schedule not in _SCHEDULES:
            raise bad("schedule", f"one of {_SCHEDULES}")
        if self.amp not in _AMP:
            raise bad("amp", f"one of {_AMP}")
        if self.channels_last not in ("auto", True, False):
            raise bad("channels_last", "'auto', True or False")
        if not self.lr > 0:
            raise bad("lr", "a float > 0")
        if self.head_lr_mult is not None and not self.head_lr_mult > 0:
            raise bad("head_lr_mult", "None or a float > 0")
        if self.weight_decay < 0 or self.warmup_epochs < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(
                "TrainConfig: weight_decay and warmup_epochs must be >= 0 and min_lr_ratio in [0, 1], "
                f"got {self.weight_decay!r}, {self.warmup_epochs!r}, {self.min_lr_ratio!r}."
            )
        if self.crop_scale is not None and not 0 < self.crop_scale <= 1:
            raise bad("crop_scale", "None or a float in (0, 1]")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"TrainConfig: mean and std need 3 values (std > 0), got {self.mean!r}, {self.std!r}.")
        for name in ("model_kwargs", "loss_options", "method", "extra"):
            if not isinstance(getattr(self, name), Mapping):
                raise bad(name, "a dict")
        self.betas = tuple(self.betas)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)
        try:
            json.dumps(self.to_dict(), allow_nan=False)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"TrainConfig must be JSON-serialisable (plain numbers, strings, lists, dicts): {err}"
            ) from None

    def to_dict(self) -> dict:
        """A JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping) -> TrainConfig:
        """Rebuild from :meth:`to_dict`'s output; unknown keys raise :class:`ConfigError`."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"TrainConfig: unknown field(s) {unknown}; valid fields are {names}.")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a configuration written as JSON (e.g. by :meth:`to_dict`)."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: not valid JSON ({err}); expected a TrainConfig dict.") from None
        return cls.from_dict(data)

    def resolved_head_lr_mult(self) -> float:
        if self.head_lr_mult is not None:
            return float(self.head_lr_mult)
        return 10.0 if self.model_kwargs.get("pretrained") else 1.0


def result_fields(config: TrainConfig | Mapping) -> dict:
    """The configuration as a dict without :data:`NON_RESULT_FIELDS`."""
    d = config.to_dict() if isinstance(config, TrainConfig) else dict(config)
    return {k: v for k, v in d.items() if k not in NON_RESULT_FIELDS}


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


@dataclass
class StepContext:
    """What a loss function may need beyond logits, labels and features.

    Attributes:
        images: ``(N, 3, H, W)`` the network's input (normalised, after any batch transform).
        batch: the collated batch as the ``Dataset`` path produced it (dict or tuple), or
            ``None`` for :class:`TensorImages` data.
        epoch: current epoch (0-based).
        step: optimisation steps done before this one.
        progress: fraction of training done, ``step / total_steps`` in ``[0, 1)`` (for ramped
            loss weights).
        model: the (unwrapped) model.
    """

    images: torch.Tensor
    batch: Any
    epoch: int
    step: int
    progress: float
    model: nn.Module


LossFn = Callable[[torch.Tensor, torch.Tensor, dict, StepContext], Any]
_LOSSES: dict[str, Callable[..., LossFn]] = {}


def register_loss(name: str, factory: Callable[..., LossFn]) -> None:
    """Register a loss under ``name`` for ``TrainConfig.loss``.

    Args:
        name: the name to use in configurations.
        factory: ``factory(**config.loss_options) -> loss_fn`` with
            ``loss_fn(logits, labels, features, ctx: StepContext)`` returning a scalar tensor, or a
            dict with the total under ``"loss"`` and any other scalar terms (logged as epoch means).
            A loss must keep no state across steps (resume would not restore it).
    """
    _LOSSES[name] = factory


def available_losses() -> list[str]:
    """Registered loss names."""
    return sorted(_LOSSES)


def _cross_entropy(label_smoothing: float = 0.0) -> LossFn:
    def loss_fn(logits, labels, features, ctx):
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)

    return loss_fn


register_loss("ce", _cross_entropy)


def _make_loss(config: TrainConfig) -> LossFn:
    if config.loss not in _LOSSES:
        raise ConfigError(f"TrainConfig.loss = {config.loss!r}: registered losses are {available_losses()}.")
    return _LOSSES[config.loss](**config.loss_options)


# --------------------------------------------------------------------------------------------
# In-memory data
# --------------------------------------------------------------------------------------------


class TensorImages:
    """A small image classification set held as tensors.

    Args:
        images: ``(N, 3, H, W)`` ``uint8`` tensor.
        labels: ``(N,)`` integer tensor (stored as ``int64``).
        ids: optional ``N`` image identifiers, kept for traceability.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, ids: Sequence[str] | None = None) -> None:
        if (not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4
                or images.shape[1] != 3):
            raise TypeError(
                "TensorImages: images must be a (N, 3, H, W) uint8 tensor, got "
                f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}."
            )
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
            raise TypeError(
                f"TensorImages: labels must be ({images.shape[0]},) integers, got {labels.dtype} {tuple(labels.shape)}."
            )
        if ids is not None and len(ids) != images.shape[0]:
            raise ValueError(f"TensorImages: {len(ids)} ids for {images.shape[0]} images.")
        self.images = images
        self.labels = labels.long()
        self.ids = list(ids) if ids is not None else None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return tuple(self.images.shape[2:])

    def subset(self, indices: Sequence[int] | torch.Tensor) -> TensorImages:
        """The images at ``indices`` (a new object sharing no storage)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        ids = [self.ids[i] for i in idx.tolist()] if self.ids is not None else None
        return TensorImages(self.images[idx].clone(), self.labels[idx].clone(), ids)

    def __repr__(self) -> str:
        classes = int(self.labels.max()) + 1 if len(self) else 0
        return f"TensorImages(n={len(self)}, size={self.image_size}, classes={classes})"


class _PreloadCollate:
    """Collate for :func:`preload`: every sample to a ``(3, size, size)`` uint8 tensor."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, samples):
        from PIL import Image

        images, labels, ids = [], [], []
        for sample in samples:
            if isinstance(sample, Mapping):
                image, label, image_id = sample["image"], sample["label"], sample.get("image_id")
            else:
                image, label = sample[0], sample[1]
                image_id = None
            if isinstance(image, Image.Image):
                image = image.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
                t = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
            elif isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] == 3:
                if image.dtype == torch.uint8:
                    image = image.float() / 255
                if image.min() < 0 or image.max() > 1:
                    raise ConfigError(
                        f"preload: sample {image_id or ''} has values in [{float(image.min()):.3f}, "
                        f"{float(image.max()):.3f}]; expected [0, 1] images (no normalisation in the "
                        "dataset's transform: fit normalises)."
                    )
                if tuple(image.shape[1:]) != (self.size, self.size):
                    image = F.interpolate(image[None].float(), size=(self.size, self.size),
                                          mode="bilinear", antialias=True, align_corners=False)[0]
                t = (image * 255).round().clamp(0, 255).to(torch.uint8)
            else:
                raise TypeError(
                    f"preload: a sample's image must be a PIL image or a (3, H, W) tensor, got "
                    f"{type(image).__name__} {tuple(getattr(image, 'shape', ()))}."
                )
            images.append(t)
            labels.append(int(label))
            ids.append(image_id)
        return torch.stack(images), torch.tensor(labels), ids


def preload(dataset, size: int, *, batch_size: int = 64, num_workers: int = 0) -> TensorImages:
    """Decode a dataset once into a :class:`TensorImages` of ``size x size`` images.

    Args:
        dataset: a map-style dataset of sample dicts (``"image"`` a PIL image or a ``(3, H, W)``
            tensor in ``[0, 1]``, ``"label"``, optional ``"image_id"``) or ``(image, label)`` pairs.
            Give it no random transform: what is decoded here is what every epoch sees (before
            :func:`fit`'s on-device flips and crops).
        size: output side; images are resized (aspect ratio not kept, as in the evaluation
            transform of ``wsolevaluation``) with antialiasing.
        batch_size: samples per decoding batch.
        num_workers: decoding worker processes.

    Returns:
        ``TensorImages`` with ``uint8`` images ``(N, 3, size, size)``, labels and ids.
    """
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=_PreloadCollate(size),
    )
    images, labels, ids = [], [], []
    for im, lb, idb in loader:
        images.append(im)
        labels.append(lb)
        ids.extend(idb)
    if not images:
        raise ValueError("preload: the dataset is empty.")
    return TensorImages(torch.cat(images), torch.cat(labels), ids if all(i is not None for i in ids) else None)


def toy_images(num_samples: int, image_size: int = 32, num_classes: int = 4, seed: int = 0) -> TensorImages:
    """A tiny learnable set for tests and smoke runs.

    Class ``c`` has a bright horizontal band (a quarter of the image high, full width, so that
    horizontal flips keep the class) in band ``c % 4`` of colour channel ``(c // 4) % 3``, on
    uniform noise; classes are distinct for ``num_classes <= 12``.

    Args:
        num_samples: ``N``.
        image_size: side ``S`` (>= 4).
        num_classes: classes (labels ``i % num_classes``).
        seed: the noise depends on it only.

    Returns:
        ``TensorImages`` with ``(N, 3, S, S)`` uint8 images.
    """
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(num_samples, 3, image_size, image_size, generator=g) * 160).to(torch.uint8)
    labels = torch.arange(num_samples) % num_classes
    band = image_size // 4
    for i, c in enumerate(labels.tolist()):
        images[i, (c // 4) % 3, (c % 4) * band:(c % 4 + 1) * band, :] = 255
    return TensorImages(images, labels)


def toy_data(config: TrainConfig) -> tuple[TensorImages, TensorImages]:
    """Data factory for the command line (``--data wsolkit.train:toy_data``).

    Reads ``config.extra["toy_data"]`` (``num_samples``, default 64; ``seed``, default 0) and
    returns ``(train, val)`` :func:`toy_images` sets (val: a quarter as many, other seed).
    """
    opts = dict(config.extra.get("toy_data", {}))
    n, seed = int(opts.get("num_samples", 64)), int(opts.get("seed", 0))
    train = toy_images(n, config.image_size, config.num_classes, seed)
    val = toy_images(max(1, n // 4), config.image_size, config.num_classes, seed + 1)
    return train, val


# --------------------------------------------------------------------------------------------
# Random streams, devices, distributed
# --------------------------------------------------------------------------------------------


def _derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (independent streams for (seed, epoch, rank, purpose))."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


_STREAM_GLOBAL, _STREAM_ORDER, _STREAM_AUGMENT, _STREAM_LOADER = 0, 1, 2, 3


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _setup_distributed() -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
        owns = True
    return _Dist(rank, dist.get_world_size(), local_rank, owns)


def _resolve_device(device, d: _Dist) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


@contextlib.contextmanager
def _global_state(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Seed and set algorithm flags for the run; restore the caller's state afterwards."""
    saved_py, saved_np = random.getstate(), np.random.get_state()
    saved_det = torch.are_deterministic_algorithms_enabled()
    saved_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        try:
            if config.deterministic:
                # cuBLAS needs this before its first use to be deterministic.
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.use_deterministic_algorithms(True)
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
            elif device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            yield
        finally:
            torch.use_deterministic_algorithms(saved_det)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved_cudnn
            random.setstate(saved_py)
            np.random.set_state(saved_np)


def _seed_epoch(config: TrainConfig, epoch: int, rank: int) -> None:
    s = _derive_seed(config.seed, epoch, rank, _STREAM_GLOBAL)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


class _Normalize:
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

    def __init__(self, data: TensorImages, config: TrainConfig, device: torch.device, d: _Dist,
                 normalize: _Normalize, train: bool) -> None:
        if data.image_size != (config.image_size, config.image_size):
            raise ConfigError(
                f"TensorImages of size {data.image_size} but TrainConfig.image_size = {config.image_size}; "
                "preload the data at the configured size or change the configuration."
            )
        if len(data) and int(data.labels.max()) >= config.num_classes:
            raise ConfigError(
                f"TensorImages has label {int(data.labels.max())} but TrainConfig.num_classes = {config.num_classes}."
            )
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.config, self.device, self.d, self.normalize, self.train = config, device, d, normalize, train
        n = len(data)
        self.per_rank = n // d.world if train else len(range(d.rank, n, d.world))
        self.steps = self.per_rank // config.batch_size if train else math.ceil(self.per_rank / config.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
        n, b, cfg = len(self.labels), self.config.batch_size, self.config
        if self.train:
            g = torch.Generator().manual_seed(_derive_seed(cfg.seed, epoch, 0, _STREAM_ORDER))
            # One permutation shared by all ranks; rank r takes every world-th index, so the union
            # of the ranks' step-s batches is the single-process step-s batch of size world * b.
            order = torch.randperm(n, generator=g)[: self.per_rank * self.d.world][self.d.rank :: self.d.world]
            aug = torch.Generator(device=self.device).manual_seed(
                _derive_seed(cfg.seed, epoch, self.d.rank, _STREAM_AUGMENT))
        else:
            order = torch.arange(self.d.rank, n, self.d.world)
        order = order.to(self.device)
        for s in range(self.steps):
            idx = order[s * b:(s + 1) * b]
            images = self.images[idx].float().div_(255)
            if self.train:
                images = self._augment(images, aug)
            yield self.normalize(images), self.labels[idx], None

    def _augment(self, images: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = images.shape[0]
        cfg = self.config
        flip = (torch.rand(n, generator=g, device=self.device) < 0.5) if cfg.hflip else None
        if cfg.crop_scale is None:
            if flip is not None:
                images = torch.where(flip.view(n, 1, 1, 1), images.flip(3), images)
            return images
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
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _collate_default(samples):
    if isinstance(samples[0], Mapping):
        from .data import collate  # imported here: the dataset modules are not needed otherwise

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

    def __init__(self, data, config: TrainConfig, device: torch.device, d: _Dist, normalize: _Normalize,
                 train: bool, collate_fn: Callable | None) -> None:
        self.data, self.config, self.device, self.d = data, config, device, d
        self.normalize, self.train = normalize, train
        self.collate_fn = collate_fn or _collate_default
        n = len(data)
        if train:
            self.sampler = torch.utils.data.DistributedSampler(
                data, num_replicas=d.world, rank=d.rank, shuffle=True, seed=config.seed, drop_last=True)
            self.steps = len(self.sampler) // config.batch_size
        else:
            # No padding (DistributedSampler would repeat samples): each rank its strided share.
            self.sampler = list(range(d.rank, n, d.world))
            self.steps = math.ceil(len(self.sampler) / config.batch_size)
        self.checked = False

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
        cfg = self.config
        if self.train:
            self.sampler.set_epoch(epoch)
        g = torch.Generator().manual_seed(_derive_seed(cfg.seed, epoch, self.d.rank, _STREAM_LOADER))
        loader = torch.utils.data.DataLoader(
            self.data, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=cfg.num_workers,
            collate_fn=self.collate_fn, pin_memory=self.device.type == "cuda", drop_last=self.train,
            generator=g,
        )
        for batch in loader:
            images, labels = _split_batch(batch)
            if not self.checked:
                self._check(images, labels)
            images = images.to(self.device, non_blocking=True)
            if images.dtype == torch.uint8:
                images = images.float().div_(255)
            yield self.normalize(images), labels.to(self.device, non_blocking=True).long(), batch

    def _check(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        cfg = self.config
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


def _batches(data, config, device, d, normalize, train, collate_fn):
    if isinstance(data, TensorImages):
        return _TensorBatches(data, config, device, d, normalize, train)
    if isinstance(data, torch.utils.data.Dataset) or hasattr(data, "__getitem__"):
        return _DatasetBatches(data, config, device, d, normalize, train, collate_fn)
    raise TypeError(f"training data must be a TensorImages or a map-style Dataset, got {type(data).__name__}.")


# --------------------------------------------------------------------------------------------
# Schedules, optimiser
# --------------------------------------------------------------------------------------------


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier at optimisation step ``step`` (0-based).

    Args:
        config: supplies ``schedule``, ``epochs``, ``warmup_epochs``, ``step_size``, ``lr_gamma``,
            ``cycle_epochs``, ``cycle_mult`` and ``min_lr_ratio``.
        step: steps taken before this one.
        steps_per_epoch: optimisation steps per epoch.

    Returns:
        ``lr(step) / lr``: linear warm-up ``(step + 1) / warmup_steps`` first, then

        * constant: 1;
        * step: ``lr_gamma ** (epoch // step_size)``;
        * cosine: ``m + (1 - m) (1 + cos(pi t)) / 2`` with ``t`` the fraction of the post-warm-up
          steps done and ``m = min_lr_ratio``;
        * sgdr: the same within each cycle, cycles of ``cycle_epochs * cycle_mult**i`` epochs
          starting after the warm-up (restart = back to 1).
    """
    spe = steps_per_epoch
    warm = round(config.warmup_epochs * spe)
    if step < warm:
        return (step + 1) / warm
    m = config.min_lr_ratio
    if config.schedule == "constant":
        return 1.0
    if config.schedule == "step":
        return config.lr_gamma ** ((step // spe) // config.step_size)
    if config.schedule == "cosine":
        t = (step - warm) / max(1, config.epochs * spe - warm)
        return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * t))
    pos, cycle = step - warm, config.cycle_epochs * spe
    while pos >= cycle:
        pos -= cycle
        cycle *= config.cycle_mult
    return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * pos / cycle))


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model)
    mult = config.resolved_head_lr_mult()
    param_groups = [
        {"params": groups["backbone"], "lr": config.lr, "base_lr": config.lr, "name": "backbone"},
        {"params": groups["head"], "lr": config.lr * mult, "base_lr": config.lr * mult, "name": "head"},
    ]
    param_groups = [g for g in param_groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(param_groups, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` atomically: a reader sees the old file or the new one, whole."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`fit` (``weights_only=True``: tensors and primitives only).

    Returns:
        ``{"format", "epoch", "model", "optimizer", "scheduler", "config", "history"}``.

    Raises:
        CheckpointError: unreadable file or not a :func:`fit` checkpoint.
    """
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"{path}: cannot be read as a checkpoint ({type(err).__name__}: {err}). Delete it to start the run afresh."
        ) from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint written by wsolkit.train.fit.")
    return ckpt


# --------------------------------------------------------------------------------------------
# Model construction, evaluation
# --------------------------------------------------------------------------------------------


def model_from_config(config: TrainConfig | Mapping, *, pretrained: bool | str | None = None) -> nn.Module:
    """Build the model a configuration describes, plug-ins included, seeded by ``config.seed``.

    Args:
        config: a :class:`TrainConfig` or its dict.
        pretrained: overrides ``model_kwargs["pretrained"]`` (``False`` when the weights come from
            a checkpoint anyway).

    Returns:
        The model on the CPU; the caller's random state is left untouched.
    """
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    kwargs = dict(config.model_kwargs)
    if pretrained is not None:
        kwargs["pretrained"] = pretrained
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        plugins = build_plugins(config.method)
        return build_model(config.model, config.num_classes, plugins=plugins or None, **kwargs)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX).

    Without either, oneDNN emulates bf16 and autocast makes CPU training slower, not faster.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolved_amp(config: TrainConfig, device: torch.device | str) -> str:
    """The precision ``config.amp`` gives on ``device``: ``"bf16"`` or ``"off"``.

    ``"auto"`` is bf16 autocast on CUDA and on CPUs with native bf16 (where it measured about
    2x faster for the default-profile models, see ``benchmarks/README.md``), fp32 elsewhere.
    """
    device = torch.device(device)
    if config.amp != "auto":
        return config.amp
    if device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16()):
        return "bf16"
    return "off"


def _autocast(config: TrainConfig, device: torch.device):
    if resolved_amp(config, device) == "off":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _use_channels_last(config: TrainConfig, device: torch.device) -> bool:
    if config.channels_last == "auto":
        return device.type in ("cuda", "cpu")
    return bool(config.channels_last)


@torch.no_grad()
def _evaluate(model: nn.Module, batches, config: TrainConfig, device: torch.device, d: _Dist) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=device, dtype=torch.float64)
    total = torch.zeros((), device=device, dtype=torch.float64)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    with _autocast(config, device):
        for images, labels, _ in batches.epoch(0):
            logits, _ = model(images)
            correct += (logits.argmax(1) == labels).sum()
            total += labels.numel()
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
    stats = torch.stack([correct, total, loss_sum])
    if d.active:
        dist.all_reduce(stats)
    model.train(was_training)
    correct, total, loss_sum = stats.tolist()
    return correct / max(total, 1), loss_sum / max(total, 1)


def evaluate_accuracy(model: nn.Module, data, config: TrainConfig, *, device=None, collate_fn=None) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (``TensorImages`` or ``Dataset``), in ``[0, 1]``.

    Images are normalised as in training (``config.mean``, ``config.std``), without augmentation.
    """
    d = _Dist()
    device = _resolve_device(device, d)
    model = model.to(device)
    normalize = _Normalize(config, device, _use_channels_last(config, device))
    return _evaluate(model, _batches(data, config, device, d, normalize, False, collate_fn), config, device, d)[0]


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()
    return ip is not None and ip.__class__.__name__ == "ZMQInteractiveShell"


def _progress_enabled(progress, d: _Dist) -> bool:
    if d.rank != 0 or progress is False:
        return False
    if progress is True:
        return True
    return sys.stderr.isatty() or _in_notebook()


def _as_config(config) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, Mapping):
        return TrainConfig.from_dict(config)
    raise TypeError(f"config must be a TrainConfig or a dict, got {type(config).__name__}.")


def _resume(path: Path, config: TrainConfig, model: nn.Module, optimizer, device) -> tuple[int, int, list]:
    ckpt = load_checkpoint(path, map_location=device)
    saved, current = result_fields(ckpt["config"]), result_fields(config)
    if saved != current:
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise CheckpointError(
            f"{path} was written by a run with another configuration (fields {diff} differ); "
            "use another run_dir or delete the checkpoint to start afresh."
        )
    unwrap(model).load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return int(ckpt["epoch"]), int(ckpt["scheduler"]["step"]), list(ckpt["history"])


def fit(
    model: nn.Module | None,
    train_data,
    config: TrainConfig | Mapping,
    *,
    val_data=None,
    run_dir: str | os.PathLike | None = None,
    loss_fn: LossFn | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    collate_fn: Callable | None = None,
    progress: bool | str = "auto",
    device: str | torch.device | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> dict:
    """Train ``model`` on ``train_data`` as ``config`` says; resume from ``run_dir`` if possible.

    Args:
        model: a model built from ``config`` (:func:`model_from_config`), or ``None`` to build it
            here. Trained in place (moved to ``device``).
        train_data: a :class:`TensorImages` or a map-style ``Dataset`` of sample dicts or
            ``(image, label)`` pairs with ``[0, 1]`` float (or ``uint8``) ``(3, H, W)`` images.
            An epoch is ``N // (world_size * batch_size)`` full batches of a fresh permutation:
            the fewer than ``world_size * batch_size`` samples left over (different ones every
            epoch) wait for the next epoch, so every step has the same batch size.
        config: :class:`TrainConfig` (or its dict).
        val_data: optional data of the same kinds; top-1 accuracy every ``config.val_every``
            epochs and after the last.
        run_dir: where ``checkpoint.pt`` and ``log.jsonl`` go. If it holds a checkpoint of the
            same configuration, training continues after its last epoch (a complete run returns
            at once); a checkpoint of another configuration raises :class:`CheckpointError`.
            ``None``: nothing is written.
        loss_fn: ``loss_fn(logits, labels, features, ctx)`` (see :func:`register_loss`); default
            from ``config.loss``. Passing one while ``config.loss`` names another raises.
        batch_transform: ``(N, 3, H, W) -> (N, 3, H, W)`` applied to each normalised training
            batch on the device (e.g. :class:`wsolkit.methods.HideAndSeek`); default from
            ``config.method``. Passing one while ``config.method`` defines one raises.
        collate_fn: ``DataLoader`` collate for ``Dataset`` data; default :func:`wsolkit.data.collate`
            for sample dicts, PyTorch's default for tuples.
        progress: ``"auto"`` (a tqdm bar in a terminal or a notebook, none otherwise), True, False.
        device: default ``cuda:LOCAL_RANK`` when available, else ``cpu``.
        on_epoch_end: called with each epoch's log record after its checkpoint is written.

    Returns:
        ``{"epochs", "history" (one record per epoch: epoch, loss, train_acc, lr, seconds,
        images_per_s, [val_acc, val_loss], [loss terms]), "final" (the last record),
        "train_seconds", "images_per_s", "resumed_from_epoch", "device", "amp" (the precision
        used, :func:`resolved_amp`), "world_size", "run_dir"}``.
    """
    config = _as_config(config)
    d = _setup_distributed()
    try:
        device = _resolve_device(device, d)
        with _global_state(config, device):
            return _fit(model, train_data, config, d, device, val_data=val_data, run_dir=run_dir,
                        loss_fn=loss_fn, batch_transform=batch_transform, collate_fn=collate_fn,
                        progress=progress, on_epoch_end=on_epoch_end)
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _fit(model, train_data, config: TrainConfig, d: _Dist, device: torch.device, *, val_data, run_dir,
         loss_fn, batch_transform, collate_fn, progress, on_epoch_end) -> dict:
    if loss_fn is not None and config.loss != "ce":
        raise ConfigError(f"fit: both loss_fn and TrainConfig.loss = {config.loss!r} given; keep one.")
    loss_fn = loss_fn or _make_loss(config)
    configured_transform = build_batch_transform(config.method)
    if batch_transform is not None and configured_transform is not None:
        raise ConfigError("fit: both batch_transform and a batch transform in TrainConfig.method given; keep one.")
    batch_transform = batch_transform or configured_transform
    if model is None:
        model = model_from_config(config)

    channels_last = _use_channels_last(config, device)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    normalize = _Normalize(config, device, channels_last)
    train_batches = _batches(train_data, config, device, d, normalize, True, collate_fn)
    val_batches = _batches(val_data, config, device, d, normalize, False, collate_fn) if val_data is not None else None
    spe = train_batches.steps
    if spe < 1:
        raise ConfigError(
            f"fit: {len(train_data)} training samples over {d.world} process(es) give no full batch of "
            f"{config.batch_size}; lower TrainConfig.batch_size."
        )
    optimizer = _make_optimizer(model, config)

    run_path = Path(run_dir) if run_dir is not None else None
    ckpt_path = run_path / "checkpoint.pt" if run_path is not None else None
    start_epoch, step, history = 0, 0, []
    d.barrier()  # rank 0 may still be writing the checkpoint of a previous call
    if ckpt_path is not None and ckpt_path.exists():
        start_epoch, step, history = _resume(ckpt_path, config, model, optimizer, device)
        if d.rank == 0:
            atomic_write_text("".join(json.dumps(r) + "\n" for r in history), run_path / "log.jsonl")
    elif run_path is not None and d.rank == 0:
        run_path.mkdir(parents=True, exist_ok=True)
        (run_path / "log.jsonl").unlink(missing_ok=True)

    net = model
    if d.active:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    total_steps = config.epochs * spe

    bar = None
    if _progress_enabled(progress, d) and start_epoch < config.epochs:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start_epoch * spe, desc=f"{config.model}", unit="step",
                   dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, config.epochs):
            _seed_epoch(config, epoch, d.rank)
            net.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.float64)
            seen = torch.zeros((), device=device, dtype=torch.float64)
            term_sums: dict[str, torch.Tensor] = {}
            for images, labels, batch in train_batches.epoch(epoch):
                factor = lr_factor(config, step, spe)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                if batch_transform is not None:
                    images = batch_transform(images)
                ctx = StepContext(images, batch, epoch, step, step / total_steps, model)
                with _autocast(config, device):
                    logits, features = net(images)
                    out = loss_fn(logits, labels, features, ctx)
                loss = out["loss"] if isinstance(out, Mapping) else out
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                with torch.no_grad():
                    loss_sum += loss.detach().double() * labels.numel()
                    correct += (logits.argmax(1) == labels).sum()
                    seen += labels.numel()
                    if isinstance(out, Mapping):
                        for k, v in out.items():
                            if k != "loss":
                                term = torch.as_tensor(v).detach().double() * labels.numel()
                                term_sums[k] = term_sums.get(k, 0) + term
                if bar is not None:
                    bar.update(1)
            stats = torch.stack([loss_sum, correct, seen] + [term_sums[k] for k in sorted(term_sums)])
            if d.active:
                dist.all_reduce(stats)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            values = stats.tolist()
            n_seen = max(values[2], 1)
            record = {
                "epoch": epoch + 1,
                "loss": values[0] / n_seen,
                "train_acc": values[1] / n_seen,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": seconds,
                "images_per_s": values[2] / seconds,
            }
            for k, v in zip(sorted(term_sums), values[3:]):
                record[k] = v / n_seen
            if val_batches is not None and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                # The plain module: DDP's forward would broadcast buffers, a collective that
                # hangs when ranks hold different numbers of validation batches.
                record["val_acc"], record["val_loss"] = _evaluate(model, val_batches, config, device, d)
            history.append(record)
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.3f}",
                                **({"val": f"{record['val_acc']:.3f}"} if "val_acc" in record else {}))
            if ckpt_path is not None and d.rank == 0:
                atomic_save({
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch + 1,
                    "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": {"step": step},
                    "config": config.to_dict(),
                    "history": history,
                }, ckpt_path)
                with open(run_path / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        if bar is not None:
            bar.close()
    d.barrier()
    return {
        "epochs": config.epochs,
        "history": history,
        "final": history[-1] if history else None,
        "train_seconds": sum(r["seconds"] for r in history),
        "images_per_s": (sum(r["images_per_s"] * r["seconds"] for r in history)
                         / max(sum(r["seconds"] for r in history), 1e-12)),
        "resumed_from_epoch": start_epoch or None,
        "device": str(device),
        "amp": resolved_amp(config, device),
        "world_size": d.world,
        "run_dir": str(run_path) if run_path is not None else None,
    }


# --------------------------------------------------------------------------------------------
# Command line (torchrun entry point)
# --------------------------------------------------------------------------------------------


def _load_factory(spec: str) -> Callable:
    module, sep, name = spec.partition(":")
    if not sep:
        raise ValueError(f"--data {spec!r}: expected 'package.module:function'.")
    return getattr(importlib.import_module(module), name)


def main(argv: Sequence[str] | None = None) -> dict:
    """``python -m wsolkit.train --config cfg.json --run-dir DIR --data pkg.mod:factory``.

    ``factory(config)`` returns the training data, or ``(train, val)``. Launch it with
    ``torchrun --nproc_per_node K -m wsolkit.train ...`` for data-parallel training. Rank 0
    prints the summary (without the per-epoch history) as JSON.
    """
    parser = argparse.ArgumentParser(prog="python -m wsolkit.train", description=main.__doc__)
    parser.add_argument("--config", required=True, help="TrainConfig as JSON")
    parser.add_argument("--run-dir", required=True, help="checkpoint and log directory (resumed if present)")
    parser.add_argument("--data", required=True, help="data factory 'package.module:function'")
    parser.add_argument("--progress", choices=["auto", "on", "off"], default="auto")
    args = parser.parse_args(argv)
    config = TrainConfig.from_json(args.config)
    data = _load_factory(args.data)(config)
    train, val = data if isinstance(data, tuple) else (data, None)
    progress = {"auto": "auto", "on": True, "off": False}[args.progress]
    summary = fit(None, train, config, val_data=val, run_dir=args.run_dir, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({k: v for k, v in summary.items() if k != "history"}))
    return summary


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: data factories return instances
    # of wsolkit.train's classes, which this copy's isinstance checks would not recognise.
    from wsolkit.train import main as _main

    _main()
