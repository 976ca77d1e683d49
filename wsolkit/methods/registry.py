"""What a WSOL method is, and how a configuration finds it by name.

A method is one file in ``wsolkit/methods/`` that calls :func:`register_method` once, at import,
with a name, a ``build`` function and its named score maps. The registry imports every module of
this package itself the first time a name is looked up (and modules named by the
``wsolkit.methods`` entry-point group of installed packages), so nobody ever has to import a
method module to train, load or evaluate a run of it.

A training configuration names methods with plain options, e.g.
``TrainConfig(method={"adl": {"positions": ["pool3"]}, "hide_and_seek": {"patch": 16}})``.
:func:`build_methods` then calls each method's ``build(model, config, **options)`` on the freshly
built backbone; ``build`` returns :class:`MethodParts`, every field optional:

============================ =====================================================================
part                         what it is, and who uses it
============================ =====================================================================
``plugins``                  ``{position: module}`` inserted after named backbone stages
                             (:attr:`wsolkit.models.GAPNet.positions`); ADL, the thesis' modules.
``heads``                    ``{name: module}`` auxiliary heads: ``head(features)`` reads any named
                             feature maps and returns a tensor or a dict of tensors, stored in
                             ``features[name]`` (a decoder with skips, a second classifier).
``pooling``                  the module that replaces global average pooling (WGAP).
``frozen``                   ``{name: module}`` networks that only a loss uses; never trained, always
                             in evaluation mode. ``build`` makes them from the run's seed or from
                             a local weights file (nothing is ever downloaded); either way they are
                             part of the model's state dict, so every checkpoint carries them and
                             :func:`wsolkit.runs.load_model` restores them as trained with.
``classification_loss``      replaces cross-entropy: ``fn(logits, labels, features, ctx)``.
``losses``                   ``{name: LossTerm}`` added to the classification loss, each with a
                             weight that may follow the training progress (:func:`linear_ramp`).
``batch_transform``          ``(N, 3, H, W) -> (N, 3, H, W)`` on each normalised training batch.
``batch_sampler``            :class:`BatchSampler`: which images form each batch (e.g. at least two
                             images of a class in every batch).
``targets``                  ``{name: TargetSpec}`` per-image target maps, computed once per source
                             image, cached on disk, moved with the image by every crop, flip and
                             resize, and given to the losses as ``ctx.targets[name]``.
============================ =====================================================================

The score maps a method contributes are registered with it, by name (``maps={"recombined": fn}``):
a map name means one function in the whole package, so evaluation, the run cache and the book
refer to a map by its name alone (:func:`score_map`).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "BatchSampler",
    "ClassGroupSampler",
    "LossTerm",
    "MapFn",
    "Method",
    "MethodError",
    "MethodParts",
    "StepContext",
    "TargetSpec",
    "TrainingParts",
    "attach_parts",
    "available_maps",
    "available_methods",
    "build_methods",
    "discover",
    "get_method",
    "linear_ramp",
    "map_fingerprint",
    "register_method",
    "score_map",
]


class MethodError(ValueError):
    """A method, a map or a method's options are unknown or do not fit together."""


# --------------------------------------------------------------------------------------------
# What a loss sees
# --------------------------------------------------------------------------------------------


@dataclass
class StepContext:
    """Everything a loss term may need beyond ``(logits, labels, features)``.

    Attributes:
        images: ``(N, 3, H, W)`` the network's input (normalised, after any batch transform).
        targets: ``{name: (N, 1, H, W) float}`` the per-image targets of the batch, moved with the
            images by the same crop and flip (empty when no method declares targets).
        batch: the collated batch of the ``Dataset`` path (dict or tuple), ``None`` for in-memory
            data.
        epoch: current epoch (0-based).
        step: optimisation steps done before this one.
        steps_per_epoch: optimisation steps per epoch.
        progress: fraction of training done, ``step / total_steps``, in ``[0, 1)``.
        model: the (unwrapped) model: ``ctx.model.frozen[name]`` reaches a frozen network.
    """

    images: torch.Tensor
    targets: dict[str, torch.Tensor]
    batch: Any
    epoch: int
    step: int
    steps_per_epoch: int
    progress: float
    model: nn.Module

    @property
    def epochs_done(self) -> float:
        """Epochs done before this step, fractional: ``step / steps_per_epoch``."""
        return self.step / self.steps_per_epoch


#: ``fn(logits, labels, features, ctx)`` returning a scalar tensor, or a dict with the value
#: under ``"loss"`` and any other scalar terms to log (epoch means).
LossFn = Callable[[torch.Tensor, torch.Tensor, dict, StepContext], Any]


@dataclass(frozen=True)
class LossTerm:
    """One term of a method's loss: ``weight(ctx) * fn(logits, labels, features, ctx)``.

    Attributes:
        fn: a :data:`LossFn`. It must keep no state across steps (a resumed run would not
            restore it).
        weight: a number, or ``weight(ctx) -> float`` for a weight that follows the training
            progress (:func:`linear_ramp`).
    """

    fn: LossFn
    weight: float | Callable[[StepContext], float] = 1.0

    def weight_at(self, ctx: StepContext) -> float:
        return float(self.weight(ctx)) if callable(self.weight) else float(self.weight)


def linear_ramp(epochs: float, final: float = 1.0) -> Callable[[StepContext], float]:
    """A loss weight that grows linearly from 0 to ``final`` over the first ``epochs`` epochs
    (by optimisation step), then stays at ``final``."""
    if not epochs > 0:
        raise MethodError(f"linear_ramp: epochs = {epochs!r}; expected a number > 0.")

    def weight(ctx: StepContext) -> float:
        return final * min(1.0, ctx.epochs_done / epochs)

    return weight


# --------------------------------------------------------------------------------------------
# Batch samplers and per-image targets
# --------------------------------------------------------------------------------------------


class BatchSampler:
    """Decides which training images form each batch of an epoch.

    :meth:`order` returns ``steps * world * batch_size`` indices: consecutive runs of
    ``world * batch_size`` form the global batch of one step, and process ``r`` takes the
    ``r``-th run of ``batch_size`` inside it, so a sampler that keeps groups of images together
    inside ``batch_size``-aligned blocks keeps them on one process.
    """

    def steps(self, labels: torch.Tensor, global_batch: int) -> int:
        """Optimisation steps per epoch (the same every epoch: the schedule depends on it)."""
        raise NotImplementedError

    def order(self, labels: torch.Tensor, global_batch: int, generator: torch.Generator) -> torch.Tensor:
        """``(steps * global_batch,)`` int64 indices into the training set for one epoch."""
        raise NotImplementedError


class ClassGroupSampler(BatchSampler):
    """Batches made of groups of ``per_class`` images of one class (shuffled every epoch).

    Every class's images are shuffled and cut into groups of ``per_class``; the groups of all
    classes are shuffled and laid side by side, ``batch_size / per_class`` groups to a batch. So
    every batch holds ``per_class`` images of each of its classes; a class's last images that
    fill no group wait for a later epoch.

    Args:
        per_class: images of one class next to each other (at least 2 for pairs).
        batch_size: the per-process batch size (must be a multiple of ``per_class``).
    """

    def __init__(self, per_class: int, batch_size: int) -> None:
        if not isinstance(per_class, int) or per_class < 1:
            raise MethodError(f"ClassGroupSampler: per_class = {per_class!r}; expected an int >= 1.")
        if batch_size % per_class:
            raise MethodError(f"ClassGroupSampler: batch size {batch_size} is not a multiple of "
                              f"per_class = {per_class}; change one of them.")
        self.per_class, self.batch_size = per_class, batch_size

    def _groups(self, labels: torch.Tensor) -> int:
        counts = torch.bincount(labels.cpu())
        return int((counts // self.per_class).sum())

    def steps(self, labels: torch.Tensor, global_batch: int) -> int:
        return self._groups(labels) * self.per_class // global_batch

    def order(self, labels: torch.Tensor, global_batch: int, generator: torch.Generator) -> torch.Tensor:
        labels = labels.cpu()
        k = self.per_class
        groups = []
        for c in torch.unique(labels).tolist():
            members = torch.nonzero(labels == c).flatten()
            members = members[torch.randperm(len(members), generator=generator)]
            usable = len(members) // k * k
            groups.append(members[:usable].view(-1, k))
        groups = torch.cat(groups)
        groups = groups[torch.randperm(len(groups), generator=generator)]
        steps = self.steps(labels, global_batch)
        return groups.flatten()[: steps * global_batch]

    def __repr__(self) -> str:
        return f"ClassGroupSampler(per_class={self.per_class}, batch_size={self.batch_size})"


@dataclass(frozen=True)
class TargetSpec:
    """A per-image target map a loss trains against (a pseudo saliency map, say).

    Attributes:
        compute: ``compute(image) -> (H, W)`` float map in ``[0, 1]`` for an ``(H, W, 3)`` uint8
            RGB array at the image's original size.
        key: what identifies the computation (function and options, e.g.
            ``"selective-search-v1:k=200"``); with the source image's bytes it keys the on-disk
            cache, so change it whenever the computation changes.
    """

    compute: Callable[[Any], Any]
    key: str


# --------------------------------------------------------------------------------------------
# The parts a method contributes
# --------------------------------------------------------------------------------------------


@dataclass
class MethodParts:
    """What one method adds to a run; see the module docstring for each field."""

    plugins: dict[str, nn.Module] = field(default_factory=dict)
    heads: dict[str, nn.Module] = field(default_factory=dict)
    pooling: nn.Module | None = None
    frozen: dict[str, nn.Module] = field(default_factory=dict)
    classification_loss: LossFn | None = None
    losses: dict[str, LossTerm] = field(default_factory=dict)
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    batch_sampler: BatchSampler | None = None
    targets: dict[str, TargetSpec] = field(default_factory=dict)


#: ``map_fn(model, features, classes) -> (N, h, w)`` raw (unnormalised) maps of ``classes``.
MapFn = Callable[[nn.Module, Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Method:
    """A registered method.

    Attributes:
        name: the name configurations use.
        build: ``build(model, config, **options) -> MethodParts``; ``model`` is the backbone as
            built (stages, ``channels``, ``positions``), ``config`` the run's ``TrainConfig``.
        maps: the score maps it contributes, by name.
        module: the module that registered it.
    """

    name: str
    build: Callable[..., MethodParts] | None
    maps: Mapping[str, MapFn]
    module: str

    def options(self) -> list[str]:
        """The option names ``build`` takes."""
        if self.build is None:
            return []
        params = list(inspect.signature(self.build).parameters.values())[2:]
        return [p.name for p in params if p.kind is not p.VAR_KEYWORD]


_METHODS: dict[str, Method] = {}
_MAPS: dict[str, tuple[MapFn, str]] = {}
_DISCOVERED = False


def register_method(name: str, build: Callable[..., MethodParts] | None = None, *,
                    maps: Mapping[str, MapFn] | None = None) -> Method:
    """Register a method under ``name`` (once per name; registering it again from the same
    module, as a re-import does, replaces it).

    Args:
        name: the key of ``TrainConfig.method``.
        build: ``build(model, config, **options) -> MethodParts``; ``None`` for a method that
            only contributes score maps (computed post hoc from a trained network).
        maps: ``{map name: map_fn}``; a map name belongs to one method in the whole package.

    Raises:
        MethodError: ``name`` or a map name is taken by another module.
    """
    module = _caller_module()
    if name in _METHODS and _METHODS[name].module != module:
        raise MethodError(f"method {name!r} is registered by {_METHODS[name].module} already; "
                          f"{module} must use another name.")
    maps = dict(maps or {})
    for map_name, fn in maps.items():
        owner = _MAPS.get(map_name)
        if owner is not None and owner[1] != name:
            raise MethodError(f"score map {map_name!r} belongs to method {owner[1]!r} already; "
                              f"method {name!r} must name its map differently.")
        if not callable(fn):
            raise MethodError(f"method {name!r}: map {map_name!r} is not callable.")
    for map_name, fn in maps.items():
        _MAPS[map_name] = (fn, name)
    _METHODS[name] = Method(name, build, maps, module)
    return _METHODS[name]


def _caller_module() -> str:
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame and frame.f_back else None
        return caller.f_globals.get("__name__", "?") if caller else "?"
    finally:
        del frame


def discover() -> None:
    """Import every method module: those of this package and the ``wsolkit.methods`` entry
    points of installed packages. Idempotent; lookups call it themselves."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True  # set first: a method module may look names up while it is imported
    try:
        package = sys.modules[__name__.rpartition(".")[0]]
        for info in pkgutil.iter_modules(package.__path__):
            if info.name != "registry" and not info.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{info.name}")
        from importlib.metadata import entry_points

        for entry in entry_points(group="wsolkit.methods"):
            entry.load()
    except BaseException:
        _DISCOVERED = False  # the next lookup raises the same error again
        raise


def available_methods() -> list[str]:
    """Registered method names (every method module imported first)."""
    discover()
    return sorted(_METHODS)


def available_maps() -> list[str]:
    """Registered score-map names (every method module imported first)."""
    discover()
    return sorted(_MAPS)


def get_method(name: str) -> Method:
    """The method registered as ``name``.

    Raises:
        MethodError: unknown name (the message lists the registered ones).
    """
    discover()
    if name not in _METHODS:
        raise MethodError(f"unknown method {name!r}; registered methods are {available_methods()}.")
    return _METHODS[name]


def score_map(name: str) -> MapFn:
    """The score-map function registered as ``name`` (``"cam"``, ``"recombined"``, ...).

    Raises:
        MethodError: unknown name (the message lists the registered maps).
    """
    discover()
    if name not in _MAPS:
        raise MethodError(f"unknown score map {name!r}; registered maps are {available_maps()}.")
    return _MAPS[name][0]


def map_fingerprint(name: str) -> str:
    """A short hash of the source of the module that defines map ``name``: evaluation caches
    include it, so editing a map's code invalidates the results computed with the old code."""
    fn = score_map(name)
    module = sys.modules[fn.__module__]
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):  # no source (frozen or interactive): the name alone
        source = fn.__module__ + ":" + fn.__qualname__
    return hashlib.sha256(source.encode()).hexdigest()[:10]


def build_methods(methods: Mapping[str, Mapping], model: nn.Module, config: Any) -> list[MethodParts]:
    """Each configured method's parts for ``model``, in the order the methods are listed.

    Raises:
        MethodError: an unknown method, options that are not a dict, or options its ``build``
            does not take (the message lists those it takes).
    """
    parts = []
    for name, options in methods.items():
        method = get_method(name)
        if not isinstance(options, Mapping):
            raise MethodError(f"method {name!r}: options must be a dict, got {type(options).__name__}.")
        if method.build is None:
            if options:
                raise MethodError(f"method {name!r} takes no options (it only defines score maps), "
                                  f"got {sorted(options)}.")
            continue
        params = inspect.signature(method.build).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(options) - set(method.options()))
            if unknown:
                raise MethodError(f"method {name!r}: unknown option(s) {unknown}; it takes "
                                  f"{method.options()}.")
        built = method.build(model, config, **options)
        if not isinstance(built, MethodParts):
            raise MethodError(f"method {name!r}: build returned {type(built).__name__}, "
                              "expected MethodParts.")
        parts.append(built)
    return parts


# --------------------------------------------------------------------------------------------
# Putting a run's parts together
# --------------------------------------------------------------------------------------------


class ComposedTransform:
    """Batch transforms applied one after the other, in the order the methods are listed."""

    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            images = transform(images)
        return images

    def __repr__(self) -> str:
        return f"ComposedTransform({self.transforms})"


@dataclass
class TrainingParts:
    """The parts of a run's methods that the training loop uses (the model holds the rest)."""

    classification_loss: LossFn | None = None
    losses: dict[str, LossTerm] = field(default_factory=dict)
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    batch_sampler: BatchSampler | None = None
    targets: dict[str, TargetSpec] = field(default_factory=dict)


def _one(name: str, values: list, methods: Sequence[str]):
    if len(values) > 1:
        raise MethodError(f"methods {list(methods)} each define a {name}; a run can have one.")
    return values[0] if values else None


def _merge(kind: str, dicts: Sequence[Mapping], methods: Sequence[str]) -> dict:
    merged: dict = {}
    for method, d in zip(methods, dicts):
        for key, value in d.items():
            if key in merged:
                raise MethodError(f"method {method!r} defines {kind} {key!r}, which an earlier "
                                  "method of the run defines too; rename one.")
            merged[key] = value
    return merged


def attach_parts(model: nn.Module, methods: Sequence[str], parts: Sequence[MethodParts]) -> TrainingParts:
    """Put the modules of ``parts`` into ``model`` (plug-ins, heads, pooling, frozen networks)
    and return the rest for the training loop.

    Plug-ins of several methods at one position run in the order the methods are listed.
    """
    for method_parts in parts:
        for position, module in method_parts.plugins.items():
            model.add_plugin(position, module)
    pooling = _one("pooling", [p.pooling for p in parts if p.pooling is not None], methods)
    if pooling is not None:
        model.pooling = pooling
    for name, head in _merge("head", [p.heads for p in parts], methods).items():
        model.add_head(name, head)
    for name, network in _merge("frozen network", [p.frozen for p in parts], methods).items():
        model.add_frozen(name, network)
    transforms = [p.batch_transform for p in parts if p.batch_transform is not None]
    return TrainingParts(
        classification_loss=_one("classification loss", [p.classification_loss for p in parts
                                                          if p.classification_loss is not None], methods),
        losses=_merge("loss term", [p.losses for p in parts], methods),
        batch_transform=(None if not transforms else transforms[0] if len(transforms) == 1
                         else ComposedTransform(transforms)),
        batch_sampler=_one("batch sampler", [p.batch_sampler for p in parts
                                             if p.batch_sampler is not None], methods),
        targets=_merge("target", [p.targets for p in parts], methods),
    )
