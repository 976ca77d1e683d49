"""CPU threads that give way when other processes need the cores.

On a small machine, PyTorch's OpenMP threads spin while they wait for each other; when another
process holds one of two cores, the thread that lost its core stalls every parallel region and
training runs several times slower, not twice (``benchmarks/bench_contention.py``). Two things
keep the speed:

* the OpenMP runtime's passive wait policy (``OMP_WAIT_POLICY=PASSIVE``), which must be in the
  environment before PyTorch starts: importing :mod:`wsolkit` sets it as a default (effective
  where wsolkit comes before torch, as in ``python -m wsolkit.train``), and ``tools/book.py``
  sets it for the notebooks' kernels;
* :class:`ThreadGovernor`: before each epoch on the CPU, the number of intra-op threads is set to
  the cores that other processes left free during the last one (at least one), and back up when
  they are free again.

``WSOL_CPU_THREADS`` fixes the number instead (an integer), ``auto`` (the default) adapts. The
number of threads changes no result beyond the order of floating-point sums; a run with
``TrainConfig.deterministic`` keeps the caller's number, so that it is repeatable bit for bit.
"""

from __future__ import annotations

import os
import time

import torch

__all__ = ["CPU_THREADS_ENV", "ThreadGovernor"]

CPU_THREADS_ENV = "WSOL_CPU_THREADS"


def _system_busy_seconds() -> float | None:
    """CPU-seconds all processes have spent busy since boot (``/proc/stat``), or ``None``."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class ThreadGovernor:
    """Adapts ``torch.set_num_threads`` to the cores other processes leave free.

    Call :meth:`update` at the start of every epoch; :meth:`restore` puts back the caller's
    number of threads. Where ``/proc/stat`` cannot be read, or ``WSOL_CPU_THREADS`` is an
    integer, the number stays fixed.
    """

    def __init__(self, setting: str | None = None) -> None:
        setting = (setting if setting is not None else os.environ.get(CPU_THREADS_ENV, "auto"))
        self.caller_threads = torch.get_num_threads()
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        if setting == "auto":
            self.fixed = None
        else:
            try:
                self.fixed = int(setting)
            except ValueError:
                raise ValueError(f"{CPU_THREADS_ENV}={setting!r}; expected 'auto' or a number of "
                                 "threads >= 1.") from None
            if self.fixed < 1:
                raise ValueError(f"{CPU_THREADS_ENV}={setting!r}; expected 'auto' or a number of "
                                 "threads >= 1.")
        self.max_threads = self.fixed or min(self.caller_threads, self.cores)
        self._last = self._sample()
        self.history: list[int] = []

    @staticmethod
    def _sample() -> tuple[float, float | None, float]:
        return time.perf_counter(), _system_busy_seconds(), time.process_time()

    def others_cores(self) -> float | None:
        """Cores other processes kept busy since the last call (``None`` if unknown)."""
        now = self._sample()
        (w0, b0, p0), (w1, b1, p1) = self._last, now
        self._last = now
        if b0 is None or b1 is None or w1 - w0 < 0.05:
            return None
        return max(((b1 - b0) - (p1 - p0)) / (w1 - w0), 0.0)

    def update(self) -> int:
        """Sets and returns the number of threads for the next epoch."""
        if self.fixed is not None:
            threads = self.fixed
        else:
            others = self.others_cores()
            if others is None:
                threads = self.max_threads
            else:
                # A core counts as taken when another process used at least half of it.
                threads = max(1, min(self.max_threads, self.cores - int(others + 0.5)))
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        self.history.append(threads)
        return threads

    def restore(self) -> None:
        if torch.get_num_threads() != self.caller_threads:
            torch.set_num_threads(self.caller_threads)
