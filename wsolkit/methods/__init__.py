"""WSOL training methods, each a plug-in module, a batch transform, or both.

A method is registered under a name with factories for its parts, so that a training
configuration can name it with plain options (JSON), e.g.
``{"hide_and_seek": {"patch": 16, "p": 0.5}, "adl": {"positions": ["pool3", "conv5_3"]}}``:

* ``plugins(**options) -> {position: nn.Module}``: modules inserted in the backbone
  (:func:`wsolkit.models.build_model`'s ``plugins``);
* ``batch_transform(**options) -> callable``: ``(N, 3, H, W) -> (N, 3, H, W)`` applied by
  :func:`wsolkit.train.fit` to each normalised training batch on the device.

Built in: ``hide_and_seek`` (Singh & Lee, ICCV 2017) and ``adl`` (Choe & Shim, CVPR 2019).
Chapters add theirs with :func:`register_method`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from .adl import ADL, adl_maps
from .hide_and_seek import HideAndSeek, hide_patches

__all__ = [
    "ADL",
    "HideAndSeek",
    "Method",
    "adl_maps",
    "available_methods",
    "build_batch_transform",
    "build_plugins",
    "hide_patches",
    "register_method",
]


@dataclass(frozen=True)
class Method:
    """A registered method: factories for its plug-ins and/or its batch transform."""

    name: str
    plugins: Callable[..., Mapping[str, nn.Module]] | None = None
    batch_transform: Callable[..., Callable] | None = None


_METHODS: dict[str, Method] = {}


def register_method(
    name: str,
    *,
    plugins: Callable[..., Mapping[str, nn.Module]] | None = None,
    batch_transform: Callable[..., Callable] | None = None,
) -> Method:
    """Register (or replace) a method under ``name``; see the module docstring for the factories."""
    if plugins is None and batch_transform is None:
        raise ValueError(f"register_method({name!r}): give a plugins and/or a batch_transform factory.")
    _METHODS[name] = Method(name, plugins, batch_transform)
    return _METHODS[name]


def available_methods() -> list[str]:
    """Registered method names."""
    return sorted(_METHODS)


def _call_factory(method: str, part: str, factory: Callable, options: Mapping) -> object:
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(options) - set(params))
        if unknown:
            raise TypeError(f"method {method!r} ({part}): unknown option(s) {unknown}; it takes {list(params)}.")
    return factory(**options)


def _lookup(methods: Mapping[str, Mapping]) -> list[tuple[Method, Mapping]]:
    out = []
    for name, options in methods.items():
        if name not in _METHODS:
            raise ValueError(f"unknown method {name!r}; registered methods are {available_methods()}.")
        if not isinstance(options, Mapping):
            raise TypeError(f"method {name!r}: options must be a dict, got {type(options).__name__}.")
        out.append((_METHODS[name], options))
    return out


def build_plugins(methods: Mapping[str, Mapping]) -> dict[str, nn.Module]:
    """Plug-in modules for a ``{method: options}`` dict.

    Returns:
        ``{position: module}``. Where several methods plug into the same position, their modules
        run in the order the methods are listed (an ``nn.Sequential``).
    """
    merged: dict[str, list[nn.Module]] = {}
    for method, options in _lookup(methods):
        if method.plugins is not None:
            for pos, module in _call_factory(method.name, "plugins", method.plugins, options).items():
                merged.setdefault(pos, []).append(module)
    return {pos: mods[0] if len(mods) == 1 else nn.Sequential(*mods) for pos, mods in merged.items()}


class _Compose:
    def __init__(self, transforms: Sequence[Callable]) -> None:
        self.transforms = list(transforms)

    def __call__(self, images):
        for t in self.transforms:
            images = t(images)
        return images

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


def build_batch_transform(methods: Mapping[str, Mapping]) -> Callable | None:
    """The composed batch transform of a ``{method: options}`` dict (``None`` if there is none)."""
    transforms = [
        _call_factory(m.name, "batch_transform", m.batch_transform, o)
        for m, o in _lookup(methods)
        if m.batch_transform is not None
    ]
    if not transforms:
        return None
    return transforms[0] if len(transforms) == 1 else _Compose(transforms)


def _hide_and_seek(patch: int | Sequence[int] = 16, p: float = 0.5, fill: float | Sequence[float] = 0.0) -> HideAndSeek:
    return HideAndSeek(patch, p, fill)


def _adl(positions: Sequence[str], drop_rate: float = 0.75, gamma: float = 0.8) -> dict[str, nn.Module]:
    if isinstance(positions, str):
        positions = [positions]
    return {pos: ADL(drop_rate, gamma) for pos in positions}


register_method("hide_and_seek", batch_transform=_hide_and_seek)
register_method("adl", plugins=_adl)
