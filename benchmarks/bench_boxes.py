"""Box extraction: wsolkit.boxes against the per-threshold OpenCV loop of the reference.

The reference (clovaai/wsolevaluation) binarises each score map at every threshold, traces
its contours with OpenCV, keeps the largest (MaxBoxAcc) or all of them (MaxBoxAccV2) and takes
the best inclusive IoU with the ground truth. This script times that loop and
``wsolkit.boxes.best_iou_per_threshold`` on the same maps, checks that every box and every IoU
is identical, and prints seconds and speed-up ratios measured in this one run.

Maps: "smooth" (sums of 1-5 Gaussian blobs) and "cam" (random 14 x 14 maps upsampled to
224 x 224 with bicubic interpolation), both min-max normalised, each with 1 to 3 random
ground-truth boxes. Noisy maps, with thousands of tiny components and holes, favour the sweep
even more (the reference pays per contour); tests/test_boxes.py covers them.

Usage:
    python benchmarks/bench_boxes.py            # 1000 maps per family, 100 and 1000 thresholds
    python benchmarks/bench_boxes.py --n 200    # fewer maps
    python benchmarks/bench_boxes.py --quick    # 50 maps, 100 thresholds, no list check
    python benchmarks/bench_boxes.py --threads 1  # wsolkit on one core, like the reference
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numba
import numpy as np
import torch
import torch.nn.functional as F

# Runs from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wsolkit import boxes  # noqa: E402

SIZE = 224


def smooth_maps(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 224, 224)`` float64 sums of 1-5 Gaussian blobs, min-max normalised."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    out = np.empty((n, SIZE, SIZE))
    for k in range(n):
        m = np.zeros((SIZE, SIZE))
        for _ in range(rng.integers(1, 6)):
            cx, cy = rng.uniform(0, SIZE, size=2)
            s = rng.uniform(8, 60)
            m += rng.uniform(0.2, 1) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
        out[k] = (m - m.min()) / (m.max() - m.min())
    return out


def cam_maps(n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 224, 224)`` float64 random 14 x 14 maps upsampled bicubic, min-max normalised."""
    f = torch.from_numpy(rng.standard_normal((n, 1, 14, 14)))
    m = F.interpolate(f, size=(SIZE, SIZE), mode="bicubic", align_corners=False)[:, 0].numpy()
    lo = m.min(axis=(1, 2), keepdims=True)
    hi = m.max(axis=(1, 2), keepdims=True)
    return (m - lo) / (hi - lo)


def random_gt(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        g = rng.integers(1, 4)
        a = rng.integers(0, SIZE, size=(g, 2, 2))
        out.append(np.concatenate([a.min(axis=1), a.max(axis=1)], axis=1))
    return out


def run_reference(maps, gts, thresholds, mode: str):
    """The reference loop's boxes per map and threshold, and the best IoU of each."""
    per_map, best = [], np.empty((len(maps), len(thresholds)))
    for k, (m, g) in enumerate(zip(maps, gts)):
        bxs = boxes.opencv_reference_boxes(m, thresholds, mode)
        per_map.append(bxs)
        # One IoU call per map, over the boxes of every threshold: the reference's per-box IoU
        # loop would only be slower.
        iou = boxes.box_iou(np.concatenate(bxs), g).max(axis=1)
        starts = np.cumsum([0] + [len(b) for b in bxs[:-1]])
        best[k] = np.maximum.reduceat(iou, starts)
    return per_map, best


def sorted_rows(b: np.ndarray) -> np.ndarray:
    return b[np.lexsort(b[:, ::-1].T)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="maps per family (default 1000)")
    parser.add_argument("--quick", action="store_true",
                        help="50 maps, 100 thresholds, IoUs and largest boxes checked only")
    parser.add_argument("--threads", type=int, default=None,
                        help="numba threads for wsolkit (default: numba's, one per core)")
    args = parser.parse_args()
    if args.threads is not None:
        numba.set_num_threads(args.threads)
    n = 50 if args.quick else args.n
    intervals = (0.01,) if args.quick else (0.01, 0.001)
    rng = np.random.default_rng(0)

    # Compile (or load the numba cache) and let every thread allocate its work arrays once,
    # outside the timings.
    warm = np.concatenate([smooth_maps(8, rng), cam_maps(8, rng)])
    for mode in ("largest", "all"):
        boxes.best_iou_per_threshold(warm, random_gt(16, rng), boxes.binarize_thresholds(), mode)
    boxes.all_component_boxes(warm[:2], boxes.binarize_thresholds())

    print(f"{n} maps of {SIZE}x{SIZE} per family; numba threads: {numba.get_num_threads()}, "
          f"OpenCV {cv2.__version__}")
    print(f"{'family':8s} {'mode':8s} {'T':>5s} {'reference s':>12s} {'wsolkit s':>10s} "
          f"{'speed-up':>9s}  identical")
    for family, make in (("smooth", smooth_maps), ("cam", cam_maps)):
        maps = make(n, rng)
        gts = random_gt(n, rng)
        for interval in intervals:
            thresholds = boxes.binarize_thresholds(interval)
            for mode in ("largest", "all"):
                t0 = time.perf_counter()
                ref_boxes, ref_best = run_reference(maps, gts, thresholds, mode)
                t_ref = time.perf_counter() - t0
                t0 = time.perf_counter()
                best = boxes.best_iou_per_threshold(maps, gts, thresholds, mode)
                t_fast = time.perf_counter() - t0
                assert np.array_equal(best, ref_best), f"{family}/{mode}/T={thresholds.size}: IoU"
                if mode == "largest":
                    got = boxes.largest_component_boxes(maps, thresholds)
                    want = np.stack([np.concatenate(b) for b in ref_boxes])
                    assert np.array_equal(got, want), f"{family}/largest/T={thresholds.size}: boxes"
                    checked = "IoU, boxes"
                elif not args.quick:
                    got = boxes.all_component_boxes(maps, thresholds)
                    for k in range(n):
                        for b_ref, b_got in zip(ref_boxes[k], got[k]):
                            assert np.array_equal(sorted_rows(b_ref), b_got), (
                                f"{family}/all/T={thresholds.size}: boxes of map {k}")
                    checked = "IoU, boxes"
                else:
                    checked = "IoU"
                print(f"{family:8s} {mode:8s} {thresholds.size:5d} {t_ref:12.2f} {t_fast:10.2f} "
                      f"{t_ref / t_fast:8.1f}x  {checked}")


if __name__ == "__main__":
    main()
