"""Files that a reader never sees half-written: atomic writes and checkpoint loading.

Every file the package writes that another process may read while it is written (checkpoints,
run results, evaluation caches) goes through :func:`atomic_save` or :func:`atomic_write_text`:
a temporary file in the same directory, ``fsync``, ``os.replace``. Checkpoints hold only tensors
and primitives and are read back with ``torch.load(..., weights_only=True)``
(:func:`load_checkpoint`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "atomic_save", "atomic_save_array", "atomic_write_text",
           "load_checkpoint"]

CHECKPOINT_FORMAT = "wsolkit-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be read, or cannot be used to resume this run."""



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


def atomic_save_array(array, path: str | os.PathLike) -> Path:
    """``numpy.save`` to ``path`` atomically (no pickles: read back with ``allow_pickle=False``)."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return _atomic_write(path, lambda f: f.write(buffer.getvalue()))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write UTF-8 text to ``path`` atomically."""
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`wsolkit.train.fit` (``weights_only=True``: tensors and primitives only).

    Returns:
        ``{"format", "epoch", "model", "optimizer", "scheduler", "config", "history"}``.

    Raises:
        CheckpointError: unreadable file or not a :func:`wsolkit.train.fit` checkpoint.
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


