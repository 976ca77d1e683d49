"""Two ways to train several small models at once on a 2-core CPU, against one at a time.

* **Grouped network**: three seeds of the default profile's ``simple_gap`` (64 px, batch 64)
  stacked as one network whose convolutions have ``groups=3`` (each group sees its own batch),
  against the single network; reported in model-images per second.
* **Processes**: two single-threaded training processes side by side against one process with
  two threads, in images per second summed over the processes.

The step is the plain fp32 channels-last loop (``bench_train.py``'s). Prints the ratios of one
run. Usage: ``python benchmarks/bench_grouped.py [--steps N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

WIDTHS = (16, 32, 64, 128)


def grouped_network(groups: int):
    """``simple_gap``'s four conv blocks with every layer split into ``groups`` independent
    copies, a GAP and one linear head per copy."""
    import torch.nn as nn

    layers, channels = [], 3
    for i, width in enumerate(WIDTHS):
        layers += [nn.Conv2d(channels * groups, width * groups, 3, padding=1, groups=groups),
                   nn.BatchNorm2d(width * groups), nn.ReLU(inplace=True)]
        if i < len(WIDTHS) - 1:
            layers.append(nn.MaxPool2d(2))
        channels = width
    body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    head = nn.Conv1d(WIDTHS[-1] * groups, 10 * groups, 1, groups=groups)
    return body, head


def model_images_per_second(groups: int, steps: int, batch: int = 64) -> float:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    body, head = grouped_network(groups)
    body = body.to(memory_format=torch.channels_last).train()
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3 * groups, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch * groups,))
    for i in range(steps + 5):
        if i == 5:
            start = time.perf_counter()
        logits = head(body(x).unsqueeze(-1)).view(batch, groups, 10).reshape(-1, 10)
        loss = F.cross_entropy(logits, y.view(groups, batch).t().reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch * groups / (time.perf_counter() - start)


def processes(count: int, threads: int, steps: int) -> float:
    """Summed images/s of ``count`` processes with ``threads`` threads each, run together."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    command = [sys.executable, __file__, "--child", str(steps), str(threads)]
    children = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(count)]
    return sum(float(child.communicate()[0].split()[-1]) for child in children)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.child[1])
        print(model_images_per_second(1, args.child[0]))
        return
    import torch

    torch.set_num_threads(2)
    load = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
    print(f"fp32, channels-last, 64 px, batch 64, {args.steps} steps, best of {args.rounds} "
          f"rounds; load average {load} at the start")
    best = {k: 0.0 for k in ("one", "grouped", "2 threads", "2 x 1 thread")}
    for _ in range(args.rounds):
        best["one"] = max(best["one"], model_images_per_second(1, args.steps))
        best["grouped"] = max(best["grouped"], model_images_per_second(3, args.steps))
        best["2 threads"] = max(best["2 threads"], processes(1, 2, args.steps))
        best["2 x 1 thread"] = max(best["2 x 1 thread"], processes(2, 1, args.steps))
    print(f"one network, 2 threads:          {best['one']:7.0f} model-img/s")
    print(f"3 seeds as one grouped network:  {best['grouped']:7.0f} model-img/s "
          f"(x{best['grouped'] / best['one']:.2f})")
    print(f"one process, 2 threads:          {best['2 threads']:7.0f} img/s")
    print(f"two processes, 1 thread each:    {best['2 x 1 thread']:7.0f} img/s "
          f"(x{best['2 x 1 thread'] / best['2 threads']:.2f})")


if __name__ == "__main__":
    main()
