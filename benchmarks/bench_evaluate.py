"""The evaluator end to end: ``wsolkit.evaluation.folder`` against the straightforward
per-threshold OpenCV implementation of the same protocol, from the files on disk.

Both read the same folder of ``<image id>.npy`` maps (224 x 224 float32, what the reference's
inference saves) and the same metadata folder (CUB-sized images, 1-3 boxes each, written with
``wsolkit.data.metadata.write_metadata``), and compute MaxBoxAcc at IoU 30 / 50 / 70 for
the largest contour and for all contours. The straightforward side does what the reference's
``BoxEvaluator`` does per image: load the map, rescale the boxes with ``int(v * 224 / size)``,
trace OpenCV contours at every threshold (``wsolkit.boxes.opencv_reference_boxes``), take the
best IoU. The script checks that every number is identical and prints seconds and the ratio, for
each threshold interval, measured in this one run.

Maps: smooth maps (1-5 Gaussian blobs) and CAM-like maps (random 14 x 14 grids upsampled
bicubic), half each, min-max normalised.

Usage:
    python benchmarks/bench_evaluate.py                 # 5,794 maps (the CUB test split's size)
    python benchmarks/bench_evaluate.py --n 500         # fewer
    python benchmarks/bench_evaluate.py --interval 0.01 # one interval only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wsolkit.boxes import box_iou, opencv_reference_boxes  # noqa: E402
from wsolkit.evaluation.folder import ScoreMaps, evaluate_score_maps  # noqa: E402
from wsolkit.data.metadata import (  # noqa: E402
    ImageSize,
    Metadata,
    read_metadata,
    write_metadata,
)

SIZE = 224
IOUS = (30, 50, 70)


def make_split(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """Maps and metadata for ``n`` images of CUB-like sizes."""
    rng = np.random.default_rng(seed)
    maps_dir, meta_dir = folder / "maps", folder / "meta"
    ids, labels, sizes, boxes = [], {}, {}, {}
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    for k in range(n):
        image_id = f"{k % 200:03d}.class/image_{k:05d}.jpg"
        width, height = int(rng.integers(300, 501)), int(rng.integers(250, 501))
        if k % 2 == 0:
            value = np.zeros((SIZE, SIZE))
            for _ in range(int(rng.integers(1, 6))):
                cx, cy, s = rng.uniform(0, SIZE), rng.uniform(0, SIZE), rng.uniform(8, 60)
                blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s))
                value += rng.uniform(0.2, 1) * blob
        else:
            value = cv2.resize(rng.random((14, 14)), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
        value = (value - value.min()) / (value.max() - value.min())
        path = maps_dir / f"{image_id}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, value.astype(np.float32))
        rows = []
        for _ in range(int(rng.integers(1, 4))):
            x0, x1 = sorted(rng.uniform(0, width, 2))
            y0, y1 = sorted(rng.uniform(0, height, 2))
            rows.append([round(x0, 1), round(y0, 1), round(x1, 1), round(y1, 1)])
        ids.append(image_id)
        labels[image_id] = k % 200
        sizes[image_id] = ImageSize(width, height)
        boxes[image_id] = np.asarray(rows)
    write_metadata(Metadata(ids, labels, sizes, boxes=boxes, source="benchmark"), meta_dir)
    return maps_dir, meta_dir


def straightforward(maps_dir: Path, meta_dir: Path, interval: float) -> dict:
    """The reference's way, one image and one threshold at a time."""
    truth = read_metadata(meta_dir)
    thresholds = np.arange(0, 1, interval)
    counts = {mode: np.zeros((len(IOUS), len(thresholds))) for mode in ("largest", "all")}
    for image_id in truth.image_ids:
        score_map = np.load(maps_dir / f"{image_id}.npy").astype(np.float64)
        size = truth.sizes[image_id]
        gt = np.array([[int(x0 * SIZE / size.width), int(y0 * SIZE / size.height),
                        int(x1 * SIZE / size.width), int(y1 * SIZE / size.height)]
                       for x0, y0, x1, y1 in truth.boxes[image_id]])
        for mode in counts:
            boxes = opencv_reference_boxes(score_map, thresholds, mode=mode)
            best = np.array([box_iou(b, gt).max() for b in boxes])
            for k, iou in enumerate(IOUS):
                counts[mode][k] += best >= iou / 100
    n = float(len(truth.image_ids))
    return {mode: [float(c.max()) for c in value * 100.0 / n] for mode, value in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5794)
    parser.add_argument("--interval", type=float, nargs="+", default=[0.01, 0.001])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        maps_dir, meta_dir = make_split(Path(tmp), args.n)
        print(f"wrote {args.n} maps and their metadata in {time.perf_counter() - t0:.1f} s")
        for interval in args.interval:
            t0 = time.perf_counter()
            ours = evaluate_score_maps(ScoreMaps(maps_dir), read_metadata(meta_dir),
                                       interval=interval, progress=False)
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            reference = straightforward(maps_dir, meta_dir, interval)
            t_ref = time.perf_counter() - t0
            for mode in ("largest", "all"):
                got = list(ours[mode]["max_box_acc"].values())
                if got != reference[mode]:
                    raise SystemExit(f"MISMATCH at interval {interval}, {mode}: {got} against "
                                     f"{reference[mode]}")
            print(f"interval {interval} ({len(ours['thresholds'])} thresholds), {args.n} maps: "
                  f"straightforward {t_ref:.1f} s, wsolkit {t_ours:.1f} s, "
                  f"{t_ref / t_ours:.1f}x; every MaxBoxAcc identical "
                  f"(MaxBoxAccV2 {ours['max_box_acc_v2']:.2f})")


if __name__ == "__main__":
    main()
