"""Command line: ``python -m wsolkit.train`` (and the ``torchrun`` entry point)."""

from __future__ import annotations

import argparse
import importlib
import json
import os
from collections.abc import Callable, Sequence

from .config import TrainConfig
from .loop import fit

__all__ = ["main"]



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
