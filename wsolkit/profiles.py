"""Run profiles and where data and runs live.

Every notebook starts with a ``parameters`` cell; its ``profile`` picks one column of the
notebook's settings:

* ``smoke``: the smallest run that still executes every cell (tests, minutes for the whole book);
* ``default``: the embedded benchmark on a CPU, what ``make book`` publishes;
* ``paper``: the paper's own settings on the real dataset (needs ``data_root`` and, in practice,
  a GPU).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

PROFILES = ("smoke", "default", "paper")

#: The project checkout (``wsolkit`` is installed in editable mode from it).
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ParameterError(ValueError):
    """A notebook parameter has a value the notebook cannot use."""


def check_choice(name: str, value: Any, choices) -> Any:
    """Returns ``value`` if it is one of ``choices``, else raises naming the parameter and the choices."""
    choices = tuple(choices)
    if value not in choices:
        raise ParameterError(f"unknown {name} {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def select(profile: str, table: Mapping[str, Any]) -> Any:
    """Picks ``table[profile]`` after checking that ``profile`` is a known profile.

    Args:
        profile: one of :data:`PROFILES`.
        table: the value for each profile, e.g. ``{"smoke": 2, "default": 30, "paper": 90}``.
    """
    check_choice("profile", profile, PROFILES)
    if profile not in table:
        raise ParameterError(f"no setting for profile {profile!r}; this notebook defines {sorted(table)}")
    return table[profile]


def data_dir() -> Path:
    """The folder holding dataset roots: ``$WSOL_DATA_DIR`` or ``<project>/data``."""
    return Path(os.environ.get("WSOL_DATA_DIR", PROJECT_ROOT / "data"))


def runs_dir() -> Path:
    """The run cache: ``$WSOL_RUNS_DIR`` or ``<project>/runs``."""
    return Path(os.environ.get("WSOL_RUNS_DIR", PROJECT_ROOT / "runs"))


def embedded_root(profile: str, layout: str, *, generate: bool = True) -> Path:
    """The embedded benchmark's root for ``layout`` ("cub", "coco" or "ilsvrc").

    The ``smoke`` profile uses its own, much smaller copy. The benchmark is generated on first
    use (deterministic, seconds to a minute), so a fresh checkout needs no separate step.
    """
    check_choice("layout", layout, ("cub", "coco", "ilsvrc"))
    check_choice("profile", profile, ("smoke", "default"))
    base = data_dir() / ("synthetic-smoke" if profile == "smoke" else "synthetic")
    root = base / layout
    if generate:
        from wsolkit.data import synthetic

        synthetic.generate(base, profile=profile, layouts=(layout,))
    return root


def resolve_data_root(profile: str, data_root: str | os.PathLike | None, layout: str) -> Path:
    """Where a notebook reads its data from.

    ``data_root`` wins when given (and must exist); otherwise the ``smoke`` and ``default``
    profiles use the embedded benchmark, and ``paper`` asks for the real dataset.
    """
    check_choice("profile", profile, PROFILES)
    if data_root:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise ParameterError(
                f"data_root {str(root)!r} is not a folder; point it at the dataset root "
                f"(see `python -m wsolkit.data verify {layout} /path`)")
        return root
    if profile == "paper":
        raise ParameterError(
            f"the paper profile runs on the real dataset: pass -p data_root /path/to/{layout} "
            "(the book's datasets page says where each dataset comes from)")
    return embedded_root(profile, layout)
