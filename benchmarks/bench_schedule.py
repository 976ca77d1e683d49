"""The default profile's schedule (30 epochs at lr 0.05) against a short one (8 epochs at
lr 0.4), same everything else, on the embedded benchmark's CUB layout.

Trains CAM and Hide-and-Seek for one seed under each schedule (runs cached in a scratch folder,
``--runs``), evaluates them with the book's protocol and prints one row per run: training
seconds, top-1 classification, GT-known localization at 0.2 and at the validation-chosen
threshold, MaxBoxAccV2 and PxAP, and the short schedule's time ratio and differences to the
default one. ``--amp off`` (the
default) measures what a CPU without native bf16 runs.

Usage: ``python benchmarks/bench_schedule.py [--seed S] [--amp off|auto] [--runs DIR]
[--methods cam has]``.
"""

from __future__ import annotations

import argparse
import os
import time

SCHEDULES = {"default: 30 epochs, lr 0.05": (30, 0.05), "short: 8 epochs, lr 0.4": (8, 0.4)}
COLUMNS = ("top-1 cls", "GT-known @0.2", "GT-known @val-chosen", "MaxBoxAccV2", "PxAP")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--amp", default="off", choices=("off", "auto", "bf16"))
    parser.add_argument("--runs", default="/tmp/wsol-bench-schedule",
                        help="scratch run folder (reruns read it)")
    parser.add_argument("--methods", nargs="+", default=["cam", "has"], choices=("cam", "has"))
    args = parser.parse_args()
    os.environ["WSOL_RUNS_DIR"] = args.runs

    from wsolkit.chapter import data_extra, train_or_load
    from wsolkit.data import CUBDataset
    from wsolkit.evaluation import cached_evaluation, load_localization_set, localization_summary
    from wsolkit.profiles import resolve_data_root
    from wsolkit.runs import load_model
    from wsolkit.train import TrainConfig, cpu_has_native_bf16

    root = resolve_data_root("default", None, "cub")
    train_set = CUBDataset(root, "train")
    train = load_localization_set(train_set, 64).as_tensor_images()
    val = load_localization_set(CUBDataset(root, "val"), 64)
    test = load_localization_set(CUBDataset(root, "test"), 64)
    load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
    print(f"{root}: seed {args.seed}, amp {args.amp}, native bf16 {cpu_has_native_bf16()}, "
          f"load average {load} at the start\n")
    print(f"{'method':6s} {'schedule':26s} {'train s':>8s} " + " ".join(f"{c:>21s}" for c in COLUMNS))
    for method in args.methods:
        rows = []
        for label, (epochs, lr) in SCHEDULES.items():
            options = {"hide_and_seek": {"patch": 16, "p": 0.5}} if method == "has" else {}
            config = TrainConfig(
                model="simple_gap", num_classes=train_set.num_classes, image_size=64,
                epochs=epochs, batch_size=64, optimizer="sgd", lr=lr, weight_decay=5e-4,
                schedule="cosine", warmup_epochs=1.0, step_size=15, amp=args.amp,
                seed=args.seed, method=options,
                extra={**data_extra("cub", root), "chapter": "bench_schedule"})
            start = time.perf_counter()
            record = train_or_load(f"bench-{method}-e{epochs}-s{args.seed}", config, train,
                                   progress=False)
            seconds = float(record.provenance.get("wall_seconds", time.perf_counter() - start))
            model = lambda: load_model(record.run_dir)
            summary = localization_summary(cached_evaluation(record.run_dir, "val", model, val, config),
                                           cached_evaluation(record.run_dir, "test", model, test, config))
            rows.append((seconds, summary))
            print(f"{method:6s} {label:26s} {seconds:8.0f} "
                  + " ".join(f"{summary[c]:21.1f}" for c in COLUMNS))
        (old_s, old), (new_s, new) = rows
        print(f"{method:6s} {'short vs default':26s} {new_s / old_s:8.2f} "
              + " ".join(f"{new[c] - old[c]:+20.1f}p" for c in COLUMNS) + "\n")


if __name__ == "__main__":
    main()
