"""Training throughput when the CPU is shared: OpenMP thread count and wait policy.

Each setting trains the default-profile ``simple_gap`` model (64 px, batch 64) with
``wsolkit.train.fit`` in a fresh process (the wait policy is read once, when PyTorch's OpenMP
runtime starts), first on a quiet machine, then beside a competing process that keeps one core
busy, as a browser or an IDE does. It prints images/s and, per setting, the ratio of the shared
to the quiet throughput, and each setting's quiet throughput against today's default (two
threads, the runtime's default wait policy).

    python benchmarks/bench_contention.py                 # fp32 (CPUs without native bf16)
    python benchmarks/bench_contention.py --amp auto      # what this CPU trains in by default
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# (label, threads at the start, OMP_WAIT_POLICY or None for the runtime's default,
#  WSOL_CPU_THREADS: a fixed number, or "auto" for wsolkit's adaptive threads)
SETTINGS = [
    ("2 threads, default wait policy", 2, None, "2"),
    ("2 threads, OMP_WAIT_POLICY=PASSIVE", 2, "PASSIVE", "2"),
    ("1 thread", 1, None, "1"),
    ("1 thread, OMP_WAIT_POLICY=PASSIVE", 1, "PASSIVE", "1"),
    ("wsolkit: PASSIVE, adaptive threads", 2, "PASSIVE", "auto"),
]

TRAIN = """
import json, sys, time
import torch
torch.set_num_threads({threads})
from wsolkit.train import TrainConfig, fit, toy_images
data = toy_images({images}, 64, 10, 0)
config = TrainConfig(model="simple_gap", num_classes=10, image_size=64, epochs={epochs},
                     batch_size=64, lr=0.05, amp={amp!r})
summary = fit(None, data, config, progress=False)
rates = [r["images_per_s"] for r in summary["history"][1:]]  # the first epoch warms up
print(json.dumps({{"images_per_s": sum(rates) / len(rates), "amp": summary["amp"]}}))
"""

BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def _train(threads: int, policy: str | None, governor: str, args) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    env["OMP_NUM_THREADS"] = str(threads)
    env["WSOL_CPU_THREADS"] = governor
    code = TRAIN.format(threads=threads, images=args.images, epochs=args.epochs, amp=args.amp)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--amp", default="off", help="TrainConfig.amp: off (fp32), auto, bf16")
    parser.add_argument("--images", type=int, default=2048, help="images per epoch")
    parser.add_argument("--epochs", type=int, default=4, help="epochs (the first is not timed)")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; amp={args.amp}")
    rows = []
    for label, threads, policy, governor in SETTINGS:
        quiet = _train(threads, policy, governor, args)
        busy = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=600)])
        try:
            time.sleep(1.0)
            shared = _train(threads, policy, governor, args)
        finally:
            busy.kill()
            busy.wait()
        rows.append((label, quiet["images_per_s"], shared["images_per_s"], quiet["amp"]))
        print(f"{label:36s} quiet {quiet['images_per_s']:7.0f} img/s   beside a busy core "
              f"{shared['images_per_s']:7.0f} img/s   shared/quiet {shared['images_per_s'] / quiet['images_per_s']:.2f}",
              flush=True)
    base = rows[0][1]
    print("\nquiet throughput against 2 threads with the default wait policy:")
    for label, quiet, shared, amp in rows:
        print(f"  {label:36s} {quiet / base:.2f}x quiet, {shared / base:.2f}x of it when shared ({amp})")


if __name__ == "__main__":
    main()
