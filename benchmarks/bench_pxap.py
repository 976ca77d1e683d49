"""PxAP accumulation: time and peak memory for 200 and 10,000 score maps of 224 x 224.

The evaluator keeps two histograms, so its memory must not grow with the number of maps: the
peak traced while accumulating (numpy allocations, via tracemalloc) should be the same for 200
and for 10,000 maps, and the memory it retains is a few kilobytes. Also compares the time with
the reference's per-image ``np.histogram`` loop on 200 maps and checks the two agree bit for bit.

Run: ``python benchmarks/bench_pxap.py [--maps 200 10000] [--batch 100]``. Prints ratios
measured in this run; absolute times depend on the machine.
"""

import argparse
import time
import tracemalloc

import numpy as np
import torch
import torch.nn.functional as F

from wsolkit.metrics import LocalizationEvaluator, pxap_from_histograms

SIZE = 224
THRESHOLDS = np.arange(0, 1, 0.01)


def cam_like_batch(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Smooth maps (14 x 14 noise, bicubic to 224, min-max), masks and ignore boxes."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 14, 14, generator=gen, dtype=torch.float64)
    maps = F.interpolate(coarse, size=(SIZE, SIZE), mode="bicubic", align_corners=False)[:, 0]
    low = maps.amin(dim=(1, 2), keepdim=True)
    maps = ((maps - low) / (maps.amax(dim=(1, 2), keepdim=True) - low)).numpy()
    noise = torch.rand(n, SIZE, SIZE, generator=gen, dtype=torch.float64).numpy()
    masks = (noise < maps ** 3).astype(np.uint8)
    ignore = np.zeros((n, SIZE, SIZE), dtype=np.uint8)
    ignore[:, 20:60, 100:180] = 1
    return maps, masks, ignore


def reference_histograms(maps, masks, ignore):
    """The reference loop: per image, one np.histogram for foreground and one for background."""
    edges = np.append(THRESHOLDS, [1.0, 2.0, 3.0])
    true_hist = np.zeros(THRESHOLDS.size + 2)
    false_hist = np.zeros(THRESHOLDS.size + 2)
    for scoremap, mask, box in zip(maps, masks, ignore):
        fg = mask > 0.5
        gt = fg.astype(np.uint8) + 255 * np.logical_and(box > 0.5, ~fg).astype(np.uint8)
        true_hist += np.histogram(scoremap[gt == 1], bins=edges)[0]
        false_hist += np.histogram(scoremap[gt == 0], bins=edges)[0]
    return true_hist, false_hist


def run_evaluator(num_maps: int, batch: int) -> dict:
    """Streams ``num_maps`` maps through the evaluator; data generation is not timed or traced."""
    tracemalloc.start()
    start_bytes = tracemalloc.get_traced_memory()[0]
    evaluator = LocalizationEvaluator(thresholds=THRESHOLDS)
    seconds, peak = 0.0, 0
    for start in range(0, num_maps, batch):
        maps, masks, ignore = cam_like_batch(start, min(batch, num_maps - start))
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        t0 = time.perf_counter()
        evaluator.accumulate(maps, None, masks=masks, ignore=ignore)
        seconds += time.perf_counter() - t0
        peak = max(peak, tracemalloc.get_traced_memory()[1] - base)
        del maps, masks, ignore
    retained = tracemalloc.get_traced_memory()[0] - start_bytes
    tracemalloc.stop()
    return {"seconds": seconds, "peak": peak, "retained": retained,
            "pxap": evaluator.compute()["pxap"]}


def compare_with_reference(num_maps: int, batch: int, repeats: int = 3) -> None:
    """Best-of-``repeats`` time of the evaluator and the reference loop on the same batches."""
    parts = [cam_like_batch(s, min(batch, num_maps - s)) for s in range(0, num_maps, batch)]
    ours_best = ref_best = float("inf")
    for _ in range(repeats):  # alternate, so that both see the same machine load
        evaluator = LocalizationEvaluator(thresholds=THRESHOLDS)
        t0 = time.perf_counter()
        for maps, masks, ignore in parts:
            evaluator.accumulate(maps, None, masks=masks, ignore=ignore)
        pxap = evaluator.compute()["pxap"]
        ours_best = min(ours_best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        hists = [reference_histograms(*p) for p in parts]
        ref_pxap = pxap_from_histograms(np.sum([h[0] for h in hists], axis=0),
                                        np.sum([h[1] for h in hists], axis=0), THRESHOLDS)["pxap"]
        ref_best = min(ref_best, time.perf_counter() - t0)
    print(f"{num_maps} maps, best of {repeats}: evaluator {ours_best:.3f} s, reference loop "
          f"{ref_best:.3f} s, ratio {ours_best / ref_best:.2f}; PxAP bit-identical: "
          f"{pxap == ref_pxap}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, nargs="+", default=[200, 10_000])
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()

    run_evaluator(args.batch, args.batch)  # warm-up: first-call allocations are not the evaluator's
    runs = {n: run_evaluator(n, args.batch) for n in args.maps}
    for n, r in runs.items():
        print(f"{n:>6} maps: {r['seconds']:.3f} s ({r['seconds'] / n * 1e3:.2f} ms/map), "
              f"peak while accumulating {r['peak'] / 2**20:.1f} MiB, retained after "
              f"{r['retained'] / 2**10:.1f} KiB, PxAP {r['pxap']:.4f}")
    small, large = min(runs), max(runs)
    print(f"peak memory ratio {large} / {small} maps: "
          f"{runs[large]['peak'] / runs[small]['peak']:.3f} (flat = 1)")
    seconds = runs[large]["seconds"] / runs[small]["seconds"]
    print(f"time ratio {large} / {small} maps: {seconds:.1f} (linear = {large / small:.0f})")
    compare_with_reference(small, args.batch)


if __name__ == "__main__":
    main()
