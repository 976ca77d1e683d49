"""Speed of the embedded benchmark generator on one CPU core, per layout.

    python benchmarks/bench_generate.py [--profile default|smoke] [--seed 0] [--repeat 1]

Numpy and torch are limited to one thread. For each layout it writes the profile into a temporary
directory and prints images (COCO: scenes) per second of wall time and of process CPU time (the
latter is steadier on a shared machine; with --repeat, the best run), then the same for rendering
alone, without encoding or writing files. The target is 500 images/s including the files; ratios
to it are printed, never asserted.
"""

from __future__ import annotations

import os

# One core: set before numpy (and its BLAS) is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from wsolkit.data import synthetic as syn

TARGET = 500.0


def _timed(fn, repeat: int) -> tuple[float, float]:
    """Best wall and best CPU seconds of ``repeat`` calls of ``fn``."""
    runs = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(r[0] for r in runs), min(r[1] for r in runs)


def _row(name: str, n: int, wall: float, cpu: float) -> str:
    return f"{name:8} {n:7d} {n / wall:11.0f} {n / cpu:10.0f} {n / cpu / TARGET:11.2f} "


def _write(tmp: str, profile: str, seed: int, layout: str, stats: dict) -> None:
    """Write one layout into a fresh directory (an up-to-date copy would be reused, not written)."""
    out = Path(tempfile.mkdtemp(dir=tmp))
    syn.generate(out, profile, seed, layouts=[layout])
    stats.update(json.loads((out / layout / syn.STAMP_NAME).read_text())["statistics"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", choices=sorted(syn.PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best is shown")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    # Warm up the imports and allocator so the first layout is not charged for them.
    syn.render_single(np.random.default_rng(0), np.arange(16) % syn.NUM_CLASSES)
    print(f"profile {args.profile}, seed {args.seed}, one core; target {TARGET:.0f} images/s with files")
    print(f"{'layout':8} {'images':>7} {'wall img/s':>11} {'cpu img/s':>10} {'cpu/target':>11}  statistics")
    for layout in ("cub", "ilsvrc", "coco"):
        n = sum(syn.PROFILES[args.profile][layout].values())
        stats: dict = {}
        with tempfile.TemporaryDirectory() as tmp:
            wall, cpu = _timed(lambda: _write(tmp, args.profile, args.seed, layout, stats), args.repeat)
        print(_row(layout, n, wall, cpu), json.dumps(stats))

    print("rendering only (no encoding, no files):")
    labels = np.arange(syn.SINGLE_CHUNK) % syn.NUM_CLASSES
    reps = 8
    wall, cpu = _timed(
        lambda: [syn.render_single(np.random.default_rng(i), labels) for i in range(reps)], args.repeat
    )
    print(_row("single", reps * len(labels), wall, cpu), f"({syn.SINGLE_SIZE} px)")
    reps = 4
    wall, cpu = _timed(
        lambda: [syn.render_scenes(np.random.default_rng(i), syn.SCENE_CHUNK) for i in range(reps)],
        args.repeat,
    )
    print(_row("scenes", reps * syn.SCENE_CHUNK, wall, cpu), f"({syn.SCENE_SIZE} px)")


if __name__ == "__main__":
    main()
