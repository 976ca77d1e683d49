"""Evaluation results cached in a run's directory, keyed by everything that produced them.

One helper, :func:`cached_result`, stores a result as ``<run_dir>/<name>-<hash of key>.json``
(and its large arrays as ``.npy`` beside it); its key always includes a hash of the code that
computes the result (the modules it is given, or else the whole ``wsolkit`` package:
:func:`code_fingerprint`), so an edited protocol never serves a number computed by the old one. The key of every cached evaluation names the data
(its fingerprint), the score map by its registered name *and* a hash of the source of the module
that defines it, a hash of the evaluation code itself (:func:`evaluation_code_fingerprint`), and
the settings (thresholds, choosers). So a cached number is recomputed when the map's code, the
protocol's code, the data or a setting changes, and two different maps never share an entry.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import types
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wsolkit.io import atomic_save_array, atomic_write_text
from wsolkit.methods.registry import map_fingerprint, score_map
from wsolkit.train.config import TrainConfig

from .localization import (
    LocalizationSet,
    ThresholdFn,
    evaluate_image_thresholds,
    evaluate_localization,
)

__all__ = ["cached_evaluation", "cached_image_threshold_evaluation", "cached_result",
           "code_fingerprint", "evaluation_code_fingerprint"]

# The modules whose code decides an evaluation's numbers, besides the map's own module.
_PROTOCOL_MODULES = ("cam.py", "boxes/protocol.py", "boxes/sweep.py", "metrics.py",
                     "evaluation/inference.py", "evaluation/localization.py")


@cache
def evaluation_code_fingerprint() -> str:
    """A short hash of the sources of the evaluation protocol (CAM math, boxes, metrics,
    inference, localization)."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for name in _PROTOCOL_MODULES:
        digest.update(name.encode())
        digest.update((root / name).read_bytes())
    return digest.hexdigest()[:10]


@cache
def _package_fingerprint() -> str:
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def code_fingerprint(code: Sequence[types.ModuleType | Callable] | None = None) -> str:
    """A short hash of the source of ``code`` (modules, or functions and classes, whose source
    decides a result); ``None``: of every module of the ``wsolkit`` package.

    Raises:
        TypeError: an entry whose source cannot be read (a builtin, a lambda typed in a shell).
    """
    if code is None:
        return _package_fingerprint()
    digest = hashlib.sha256()
    for item in code:
        try:
            source = inspect.getsource(item)
        except (OSError, TypeError) as error:
            raise TypeError(f"code_fingerprint: cannot read the source of {item!r} ({error}); "
                            "pass modules, functions or classes defined in files.") from error
        digest.update(getattr(item, "__qualname__", getattr(item, "__name__", "")).encode())
        digest.update(source.encode())
    return digest.hexdigest()[:10]


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _digest(key: Any) -> str:
    return hashlib.sha256(json.dumps(_jsonable(key), sort_keys=True).encode()).hexdigest()[:10]


def cached_result(run_dir: str | os.PathLike, name: str, key: Any,
                  compute: Callable[[], Mapping[str, Any]], *, arrays: Sequence[str] = (),
                  code: Sequence[types.ModuleType | Callable] | None = None) -> dict:
    """``compute()``, cached in ``run_dir`` as ``<name>-<hash of key and code>.json``.

    Args:
        run_dir: the run's directory (the result belongs to its model).
        name: what the result is (``"eval-test-cam"``, ``"coco-tune"``, ...).
        key: JSON-serialisable; must name everything the result depends on besides the run
            itself and the code: a data fingerprint, the settings.
        compute: returns a dict; numpy arrays and scalars are stored as JSON lists and numbers
            and come back as such (also from the call that computes them), except the entries
            named in ``arrays``.
        arrays: entries stored as ``.npy`` files beside the JSON and returned as they were
            computed (numpy arrays, or tensors).
        code: the modules or functions whose source decides the result (hashed into the key:
            :func:`code_fingerprint`); ``None``, the default, hashes the whole ``wsolkit``
            package, which is always safe and recomputes after any edit of it. Code outside
            the package that ``compute`` calls (a notebook's own function) must be listed.

    Returns:
        The result.
    """
    return _cached(run_dir, name, {"key": key, "code": code_fingerprint(code)}, compute,
                   arrays)[0]


def _cached(run_dir, name: str, key: Any, compute, arrays: Sequence[str] = ()) -> tuple[dict, bool]:
    stem = Path(run_dir) / f"{name}-{_digest(key)}"
    json_path = stem.with_suffix(".json")
    array_paths = {a: Path(f"{stem}-{a}.npy") for a in arrays}
    if json_path.exists() and all(p.exists() for p in array_paths.values()):
        result = json.loads(json_path.read_text())
        for entry, path in array_paths.items():
            value = np.load(path, allow_pickle=False)
            result[entry] = torch.from_numpy(value) if result.pop(f"{entry}:tensor", False) else value
        return result, True
    computed = dict(compute())
    stored = _jsonable({k: v for k, v in computed.items() if k not in array_paths})
    for entry, path in array_paths.items():
        value = computed[entry]
        stored[f"{entry}:tensor"] = isinstance(value, torch.Tensor)
        atomic_save_array(value.numpy() if isinstance(value, torch.Tensor) else value, path)
    atomic_write_text(json.dumps(stored) + "\n", json_path)
    result = {k: v for k, v in stored.items() if not k.endswith(":tensor")}
    result.update({entry: computed[entry] for entry in array_paths})
    return result, False


_CURVES = ("thresholds", "loc_curve", "pxap_precision", "pxap_recall", "pxap_thresholds")
_PER_IMAGE = ("per_image_correct", "per_image_iou_all", "per_image_top1")


def cached_evaluation(run_dir: str | os.PathLike, split: str, model_loader: Callable[[], torch.nn.Module],
                      data: LocalizationSet, config: TrainConfig, *, map_name: str = "cam",
                      cam_threshold: float = 0.2, keep_maps: bool = False) -> dict:
    """:func:`~wsolkit.evaluation.localization.evaluate_localization`, cached in ``run_dir``.

    The model is loaded (``model_loader()``) only when something must be computed. The
    per-image arrays (``per_image_correct``, ``per_image_top1``, ``per_image_part_hit``) and, with
    ``keep_maps``, the score maps (float32) and the predictions are cached as ``.npy`` beside the
    JSON.

    Raises:
        wsolkit.methods.MethodError: ``map_name`` is not a registered map (the message lists them).
    """
    score_map(map_name)  # an unknown name fails here, before anything is read or computed
    key = [data.fingerprint(), map_name, map_fingerprint(map_name), evaluation_code_fingerprint(),
           cam_threshold]

    def compute() -> dict:
        return evaluate_localization(model_loader(), data, mean=config.mean, std=config.std,
                                     map_name=map_name, cam_threshold=cam_threshold,
                                     keep_maps=keep_maps)

    arrays = (_PER_IMAGE + (("per_image_part_hit",) if data.part_boxes is not None else ())
              + (("maps", "predictions") if keep_maps else ()))
    results, hit = _cached(run_dir, f"eval-{split}-{map_name}", key, compute, arrays)
    results["cached"] = hit
    for name in _CURVES:
        if name in results:
            results[name] = np.asarray(results[name])
    return results


def cached_image_threshold_evaluation(run_dir: str | os.PathLike, split: str,
                                      model_loader: Callable[[], torch.nn.Module],
                                      data: LocalizationSet, config: TrainConfig,
                                      choosers: Mapping[str, ThresholdFn], *,
                                      map_name: str = "cam", fallback: float = 0.2) -> dict:
    """:func:`~wsolkit.evaluation.localization.evaluate_image_thresholds`, cached in ``run_dir``.

    The key covers what :func:`cached_evaluation`'s does, the chooser names, the source of the
    modules that define the choosers and ``fallback``: a chooser's name must identify its
    settings (two rules from one factory differ only by their arguments).
    """
    score_map(map_name)
    # The choosers' code too: the modules that define them (a rule edited in place is
    # recomputed even if its name stays).
    modules = [inspect.getmodule(c) for c in choosers.values()]
    key = [data.fingerprint(), map_name, map_fingerprint(map_name), evaluation_code_fingerprint(),
           sorted(choosers), fallback,
           code_fingerprint(sorted({m for m in modules if m is not None}, key=lambda m: m.__name__))]

    def compute() -> dict:
        return evaluate_image_thresholds(model_loader(), data, choosers, mean=config.mean,
                                         std=config.std, map_name=map_name, fallback=fallback)

    results, hit = _cached(run_dir, f"eval-{split}-{map_name}-per-image", key, compute)
    results["cached"] = hit
    for entry in results["choosers"].values():
        entry["thresholds"] = np.asarray(entry["thresholds"])
        entry["ious"] = np.asarray(entry["ious"])
    return results
