"""Processes and random streams: one process or several under ``torchrun``, and the seeds that make
a resumed run end with the same weights as an uninterrupted one.

The data order, the augmentation and the global random state (dropout, ADL, Hide-and-Seek) of
epoch ``e`` are all derived from ``(config.seed, e, rank)``, so a run resumed at epoch ``e`` needs
no pickled random state. The caller's random state and PyTorch's global flags are restored when
training returns.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from .config import TrainConfig


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (independent streams for (seed, epoch, rank, purpose))."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))


STREAM_GLOBAL, STREAM_ORDER, STREAM_AUGMENT, STREAM_LOADER = 0, 1, 2, 3


@dataclass
class Processes:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def setup_distributed() -> Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend)
        owns = True
    return Processes(rank, dist.get_world_size(), local_rank, owns)


def resolve_device(device, d: Processes) -> torch.device:
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


@contextlib.contextmanager
def global_state(config: TrainConfig, device: torch.device) -> Iterator[None]:
    """Seed and set algorithm flags for the run; restore the caller's state afterwards."""
    saved_py, saved_np = random.getstate(), np.random.get_state()
    saved_det = torch.are_deterministic_algorithms_enabled()
    saved_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cuda_devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        try:
            if config.deterministic:
                # cuBLAS needs this before its first use to be deterministic.
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.use_deterministic_algorithms(True)
                torch.backends.cudnn.deterministic = True
                torch.backends.cudnn.benchmark = False
            elif device.type == "cuda":
                torch.backends.cudnn.benchmark = True
            yield
        finally:
            torch.use_deterministic_algorithms(saved_det)
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved_cudnn
            random.setstate(saved_py)
            np.random.set_state(saved_np)


def seed_epoch(config: TrainConfig, epoch: int, rank: int) -> None:
    s = derive_seed(config.seed, epoch, rank, STREAM_GLOBAL)
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2**32)
