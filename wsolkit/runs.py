"""The run cache: train once per configuration, read the results back everywhere else.

A run lives in ``<root>/<name>-<hash>/`` where ``hash`` is :func:`config_hash` of its
configuration and ``root`` is ``runs_root``, else the environment variable ``WSOL_RUNS_DIR``, else
``runs``. The directory holds

* ``config.json``: the configuration (written before training starts);
* ``checkpoint.pt`` and ``log.jsonl``: written by :func:`wsolkit.train.fit` every epoch, so an
  interrupted run resumes where it stopped;
* ``results.json``: written atomically when ``train_fn`` returns: the metrics and their
  provenance (git commit, package versions, device, wall time, configuration). Its presence means
  "done": :func:`cached_run` then returns it without training.

A ``results.json`` that cannot be parsed (a file edited by hand, a disk error) is moved aside to
``results.json.corrupt`` with a :class:`RunCacheWarning` and the run is redone; as the checkpoint
of a finished run is complete, redoing it usually costs only the evaluation in ``train_fn``. A
``results.json`` whose configuration differs from the requested one raises
:class:`RunCacheError` (the directory name says it should match).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .io import atomic_write_text, load_checkpoint
from .train.config import NON_RESULT_FIELDS, TrainConfig, result_fields
from .train.model import model_from_config

__all__ = [
    "RunCacheError",
    "RunCacheWarning",
    "RunRecord",
    "cached_run",
    "config_hash",
    "load_model",
    "provenance",
    "provenance_table",
    "read_log",
    "run_dir_for",
    "runs_root",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RunCacheError(RuntimeError):
    """A run directory is inconsistent with what was asked of it."""


class RunCacheWarning(UserWarning):
    """A cached result could not be used and the run is being redone."""


def _config_dict(config: TrainConfig | Mapping) -> dict:
    if isinstance(config, TrainConfig):
        return result_fields(config)
    if isinstance(config, Mapping):
        d = json.loads(json.dumps(dict(config)))
        return {k: v for k, v in d.items() if k not in NON_RESULT_FIELDS}
    raise TypeError(f"config must be a TrainConfig or a JSON-serialisable dict, got {type(config).__name__}.")


def config_hash(config: TrainConfig | Mapping, length: int = 10) -> str:
    """A short, stable hex digest of the fields of ``config`` that change results.

    Args:
        config: a :class:`~wsolkit.train.TrainConfig` or a JSON-serialisable dict.
        length: number of hex digits (of SHA-256).

    Returns:
        The digest of the configuration as JSON with sorted keys, leaving out
        :data:`wsolkit.train.NON_RESULT_FIELDS` (``num_workers``).
    """
    text = json.dumps(_config_dict(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def runs_root(root: str | os.PathLike | None = None) -> Path:
    """``root`` if given, else ``$WSOL_RUNS_DIR``, else ``runs``."""
    return Path(root if root is not None else os.environ.get("WSOL_RUNS_DIR", "runs"))


def run_dir_for(name: str, config: TrainConfig | Mapping, root: str | os.PathLike | None = None) -> Path:
    """``<root>/<name>-<config_hash>``; ``name`` may use letters, digits, ``_ . -``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"run name {name!r}: use letters, digits, '_', '.', '-' (starting with a letter or digit).")
    return runs_root(root) / f"{name}-{config_hash(config)}"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"cpu: {platform.processor() or platform.machine()} ({cpus} cores)"


def provenance() -> dict:
    """Where a result comes from: git commit (``"unknown"`` outside a checkout), whether the
    tracked files had uncommitted changes, package versions and device name."""
    import torchvision

    from . import __version__

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "git_commit": commit or "unknown",
        "git_dirty": None if status is None else bool(status),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "numpy": np.__version__,
            "wsolkit": __version__,
        },
        "device": _device_name(),
    }


@dataclass
class RunRecord:
    """A finished run.

    Attributes:
        name: the run's name.
        run_dir: its directory.
        config: the configuration (dict, without non-result fields).
        metrics: what ``train_fn`` returned.
        provenance: :func:`provenance` plus ``wall_seconds``, ``started``, ``finished``.
        cached: True when read from disk, False when trained by this call.
    """

    name: str
    run_dir: Path
    config: dict
    metrics: dict
    provenance: dict
    cached: bool

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    def load_model(self, map_location="cpu") -> nn.Module:
        """The trained model (see :func:`load_model`)."""
        return load_model(self.run_dir, map_location=map_location)

    def log(self) -> list[dict]:
        """The per-epoch records of ``log.jsonl``."""
        return read_log(self.run_dir)


def provenance_table(records: Iterable[RunRecord]):
    """Where each run's numbers come from, one row per run, for a chapter to show.

    Columns: ``source`` ("trained now" or "run cache"), ``finished`` (UTC), ``commit`` (short
    hash, ``+`` when the tracked files had uncommitted changes), ``device``, ``precision`` (what
    ``TrainConfig.amp`` resolved to; ``-`` for runs that did not record it), ``split`` (the
    training split's annotation fingerprint, :func:`wsolkit.chapter.data_extra`; ``-`` when the
    configuration has none), ``minutes`` of training, and, where any run's data had boxes left
    out of training (COCO's zero-height boxes), ``boxes left out``; indexed by run name. A
    ``pandas.DataFrame``.
    """
    import pandas as pd

    rows = []
    for record in records:
        prov = record.provenance
        commit = str(prov.get("git_commit", "unknown"))[:8] + ("+" if prov.get("git_dirty") else "")
        rows.append({
            "run": record.name,
            "source": "run cache" if record.cached else "trained now",
            "finished": str(prov.get("finished", "-"))[:16].replace("T", " "),
            "commit": commit,
            "device": prov.get("device", "-"),
            "precision": record.metrics.get("amp", "-"),
            "split": str(record.config.get("extra", {}).get("split_fingerprint", "-"))[:8],
            "minutes": round(float(prov.get("wall_seconds", float("nan"))) / 60, 1),
            "boxes left out": int(record.config.get("extra", {}).get("degenerate_boxes_left_out", 0)),
        })
    table = pd.DataFrame(rows).set_index("run")
    if not table["boxes left out"].any():
        table = table.drop(columns="boxes left out")
    return table


def _read_results(path: Path) -> dict | None:
    """The parsed results.json, or None after moving an unusable one aside with a warning."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"top level is {type(data).__name__}, not an object")
        missing = [k for k in ("name", "config", "metrics", "provenance") if k not in data]
        if missing:
            raise ValueError(f"missing keys {missing}")
    except (UnicodeDecodeError, ValueError) as err:
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        warnings.warn(
            f"{path}: unusable ({err}); moved to {aside.name} and redoing the run "
            "(training resumes from checkpoint.pt if it is there).",
            RunCacheWarning, stacklevel=3,
        )
        return None
    return data


def cached_run(
    name: str,
    config: TrainConfig | Mapping,
    train_fn: Callable[[Path], Mapping[str, Any]],
    runs_root: str | os.PathLike | None = None,
) -> RunRecord:
    """Return the results of ``name`` under ``config``, training only if they are not on disk.

    Args:
        name: run name (the directory is ``<root>/<name>-<config_hash(config)>``).
        config: the configuration that determines the result.
        train_fn: ``train_fn(run_dir) -> metrics`` (JSON-serialisable dict); typically calls
            :func:`wsolkit.train.fit` with ``run_dir`` (so it resumes an interrupted run) and
            evaluates.
        runs_root: root directory; default ``$WSOL_RUNS_DIR`` or ``runs``.

    Returns:
        The :class:`RunRecord`; ``cached`` tells whether ``train_fn`` ran.

    Raises:
        RunCacheError: ``results.json`` exists with another configuration.
    """
    run_dir = run_dir_for(name, config, runs_root)
    cfg = _config_dict(config)
    results_path = run_dir / "results.json"
    if results_path.exists():
        data = _read_results(results_path)
        if data is not None:
            if _config_dict(data["config"]) != cfg:
                diff = sorted(k for k in set(cfg) | set(data["config"]) if cfg.get(k) != data["config"].get(k))
                raise RunCacheError(
                    f"{results_path} holds another configuration (fields {diff} differ) although the "
                    "directory name matches; it was edited or copied. Delete the directory to redo the run."
                )
            return RunRecord(name, run_dir, data["config"], data["metrics"], data["provenance"], cached=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    if rank0:
        atomic_write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", run_dir / "config.json")
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    metrics = train_fn(run_dir)
    wall = time.perf_counter() - t0
    if not isinstance(metrics, Mapping):
        raise TypeError(f"train_fn must return a dict of metrics, got {type(metrics).__name__}.")
    try:
        metrics = json.loads(json.dumps(dict(metrics)))
    except TypeError as err:
        raise TypeError(
            f"train_fn's metrics must be JSON-serialisable (numbers, strings, lists, dicts): {err}"
        ) from None
    prov = provenance()
    prov.update(wall_seconds=wall, started=started.isoformat(),
                finished=datetime.now(timezone.utc).isoformat())
    if rank0:
        record = {"name": name, "config_hash": config_hash(cfg), "config": cfg, "metrics": metrics, "provenance": prov}
        atomic_write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", results_path)
    return RunRecord(name, run_dir, cfg, metrics, prov, cached=False)


def read_log(run_dir: str | os.PathLike) -> list[dict]:
    """The per-epoch records of ``run_dir/log.jsonl`` (empty list if absent)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return []
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise RunCacheError(f"{path}:{i}: not a JSON record ({err}).") from None
    return records


def load_model(run_dir: str | os.PathLike, *, map_location="cpu", allow_incomplete: bool = False) -> nn.Module:
    """Rebuild a run's model from its configuration and load its trained weights.

    Args:
        run_dir: a directory with ``checkpoint.pt`` written by :func:`wsolkit.train.fit`.
        map_location: where the weights go.
        allow_incomplete: accept a checkpoint from before the last epoch.

    Returns:
        The model in evaluation mode, with every part of its methods (found by name in
        :mod:`wsolkit.methods`, nothing to import first).

    Raises:
        RunCacheError: no checkpoint, or an incomplete one without ``allow_incomplete``.
    """
    path = Path(run_dir) / "checkpoint.pt"
    if not path.exists():
        raise RunCacheError(f"{path} does not exist: the run was never trained here (run it with cached_run).")
    ckpt = load_checkpoint(path, map_location=map_location)
    config = TrainConfig.from_dict(ckpt["config"])
    if ckpt["epoch"] < config.epochs and not allow_incomplete:
        raise RunCacheError(
            f"{path} is at epoch {ckpt['epoch']} of {config.epochs}: the run was interrupted. Resume it "
            "(call fit/cached_run again) or pass allow_incomplete=True."
        )
    model = model_from_config(config, pretrained=False)
    model.load_state_dict(ckpt["model"])
    return model.to(map_location).eval()
