"""WSOL methods, one file each, found by name.

Every module here registers one method (or a family) with
:func:`~wsolkit.methods.registry.register_method`: the parts it adds to a training run
(plug-ins, auxiliary heads, a pooling, frozen networks, loss terms, a batch transform, a batch
sampler, per-image targets) and the score maps it defines. :mod:`wsolkit.methods.registry` says
what each part is; a new method is one new file in this folder, found without any import.

========================= ============================================ ===========================
module                    method (configuration name)                  score maps
========================= ============================================ ===========================
``cam``                   CAM, Zhou et al. 2016 (``cam``)              ``cam``
``hide_and_seek``         Singh & Lee 2017 (``hide_and_seek``)         -
``adl``                   Choe & Shim 2019 (``adl``)                   -
``cutmix``                Yun et al. 2019 (``cutmix``)                 -
``cosine_dcm``            Barz & Denzler 2022 (``cosine``,             ``cosine_similarity``
                          ``random_erasing``)
``improving_cam``         Zhang, Chang & Bui (``wgap``)                ``recombined``,
                                                                       ``softmax_weighted``,
                                                                       ``positive_part``,
                                                                       ``negative_part``
``selection``             Zhang (thesis), ASS (``ass``)                -
``dual_hiding``           Zhang (thesis), AMH (``amh``)                -
``rcam``                  Zhang (thesis), two-stage localization       -
``saliency_aware``        Chen & Hsu (``saliency_aware``)              ``saliency``
``cams2i``                Kou et al., CAMs2i (``cams2i``)              ``cams2i``, ``inner_cam``
========================= ============================================ ===========================

A score map is any model's: ``recombined`` of a plain CAM network is the paper's ablation row.
"""

from __future__ import annotations

from .adl import ADL, adl_maps
from .hide_and_seek import HideAndSeek, hide_patches
from .registry import (
    BatchSampler,
    ClassGroupSampler,
    LossTerm,
    MapFn,
    Method,
    MethodError,
    MethodParts,
    StepContext,
    TargetSpec,
    available_maps,
    available_methods,
    build_methods,
    discover,
    get_method,
    linear_ramp,
    map_fingerprint,
    register_method,
    score_map,
)

__all__ = [
    "ADL",
    "BatchSampler",
    "ClassGroupSampler",
    "HideAndSeek",
    "LossTerm",
    "MapFn",
    "Method",
    "MethodError",
    "MethodParts",
    "StepContext",
    "TargetSpec",
    "adl_maps",
    "available_maps",
    "available_methods",
    "build_methods",
    "discover",
    "get_method",
    "hide_patches",
    "linear_ramp",
    "map_fingerprint",
    "register_method",
    "score_map",
]
