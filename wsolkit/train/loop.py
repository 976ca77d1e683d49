"""The training loop: :func:`fit` and top-1 evaluation during training."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from wsolkit.io import CHECKPOINT_FORMAT, CheckpointError, atomic_save, atomic_write_text, load_checkpoint
from wsolkit.methods.registry import LossFn, StepContext
from wsolkit.models import unwrap

from .batches import Normalize, make_batches
from .config import ConfigError, TrainConfig, result_fields
from .distributed import Processes, global_state, resolve_device, seed_epoch, setup_distributed
from .model import model_from_config, training_parts
from .optim import lr_factor, make_optimizer
from .precision import autocast, resolved_amp, use_channels_last
from .threads import ThreadGovernor

__all__ = ["PROGRESS_FILE_ENV", "evaluate_accuracy", "fit"]

#: An environment variable naming a file that :func:`fit` appends one JSON line to after every
#: epoch (run, epoch, epochs, images/s, seconds so far): how ``tools/book.py`` shows training
#: progress on the terminal while notebooks execute, with no progress bar in the notebooks.
PROGRESS_FILE_ENV = "WSOL_PROGRESS_FILE"


def _report_progress(run_name: str, record: dict, epochs: int, elapsed: float, start_epoch: int,
                     d: Processes) -> None:
    path = os.environ.get(PROGRESS_FILE_ENV)
    if not path or d.rank != 0:
        return
    line = {"run": run_name, "epoch": record["epoch"], "epochs": epochs,
            "images_per_s": record["images_per_s"], "seconds": elapsed, "start_epoch": start_epoch,
            "time": time.time()}
    try:
        with open(path, "a") as f:
            f.write(json.dumps(line) + "\n")
    except OSError:
        pass  # progress is a courtesy; a vanished file must not stop a training


@torch.no_grad()
def _evaluate(model: nn.Module, batches, config: TrainConfig, device: torch.device, d: Processes) -> tuple[float, float]:
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=device, dtype=torch.float64)
    total = torch.zeros((), device=device, dtype=torch.float64)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    with autocast(config, device):
        for images, labels, _, _ in batches.epoch(0):
            logits, _ = model(images)
            correct += (logits.argmax(1) == labels).sum()
            total += labels.numel()
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
    stats = torch.stack([correct, total, loss_sum])
    if d.active:
        dist.all_reduce(stats)
    model.train(was_training)
    correct, total, loss_sum = stats.tolist()
    return correct / max(total, 1), loss_sum / max(total, 1)


def evaluate_accuracy(model: nn.Module, data, config: TrainConfig, *, device=None, collate_fn=None) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (``TensorImages`` or ``Dataset``), in ``[0, 1]``.

    Images are normalised as in training (``config.mean``, ``config.std``), without augmentation.
    """
    d = Processes()
    device = resolve_device(device, d)
    model = model.to(device)
    normalize = Normalize(config, device, use_channels_last(config, device))
    return _evaluate(model, make_batches(data, config, device, d, normalize, False, collate_fn), config, device, d)[0]


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()
    return ip is not None and ip.__class__.__name__ == "ZMQInteractiveShell"


def _progress_enabled(progress, d: Processes) -> bool:
    if d.rank != 0 or progress is False:
        return False
    if progress is True:
        return True
    return sys.stderr.isatty() or _in_notebook()


def _as_config(config) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, Mapping):
        return TrainConfig.from_dict(config)
    raise TypeError(f"config must be a TrainConfig or a dict, got {type(config).__name__}.")


def _resume(path: Path, config: TrainConfig, model: nn.Module, optimizer, device) -> tuple[int, int, list]:
    ckpt = load_checkpoint(path, map_location=device)
    saved, current = result_fields(ckpt["config"]), result_fields(config)
    if saved != current:
        diff = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise CheckpointError(
            f"{path} was written by a run with another configuration (fields {diff} differ); "
            "use another run_dir or delete the checkpoint to start afresh."
        )
    unwrap(model).load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return int(ckpt["epoch"]), int(ckpt["scheduler"]["step"]), list(ckpt["history"])


def fit(
    model: nn.Module | None,
    train_data,
    config: TrainConfig | Mapping,
    *,
    val_data=None,
    run_dir: str | os.PathLike | None = None,
    loss_fn: LossFn | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    collate_fn: Callable | None = None,
    progress: bool | str = "auto",
    device: str | torch.device | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> dict:
    """Train ``model`` on ``train_data`` as ``config`` says; resume from ``run_dir`` if possible.

    Args:
        model: a model built from ``config`` (:func:`model_from_config`), or ``None`` to build it
            here. Trained in place (moved to ``device``).
        train_data: a :class:`TensorImages` or a map-style ``Dataset`` of sample dicts or
            ``(image, label)`` pairs with ``[0, 1]`` float (or ``uint8``) ``(3, H, W)`` images.
            An epoch is ``N // (world_size * batch_size)`` full batches of a fresh permutation:
            the fewer than ``world_size * batch_size`` samples left over (different ones every
            epoch) wait for the next epoch, so every step has the same batch size.
        config: :class:`TrainConfig` (or its dict).
        val_data: optional data of the same kinds; top-1 accuracy every ``config.val_every``
            epochs and after the last.
        run_dir: where ``checkpoint.pt`` and ``log.jsonl`` go. If it holds a checkpoint of the
            same configuration, training continues after its last epoch (a complete run returns
            at once); a checkpoint of another configuration raises :class:`CheckpointError`.
            ``None``: nothing is written.
        loss_fn: the classification loss ``loss_fn(logits, labels, features, ctx)``
            (:data:`wsolkit.methods.registry.LossFn`); default cross-entropy, or the one a method
            of ``config.method`` defines (passing one then raises). The methods' loss terms are
            added to it.
        batch_transform: ``(N, 3, H, W) -> (N, 3, H, W)`` applied to each normalised training
            batch on the device (e.g. :class:`wsolkit.methods.HideAndSeek`); default from
            ``config.method``. Passing one while ``config.method`` defines one raises.
        collate_fn: ``DataLoader`` collate for ``Dataset`` data; default :func:`wsolkit.data.collate`
            for sample dicts, PyTorch's default for tuples.
        progress: ``"auto"`` (a tqdm bar in a terminal or a notebook, none otherwise), True, False.
        device: default ``cuda:LOCAL_RANK`` when available, else ``cpu``.
        on_epoch_end: called with each epoch's log record after its checkpoint is written.

    Returns:
        ``{"epochs", "history" (one record per epoch: epoch, loss, train_acc, lr, seconds,
        images_per_s, [val_acc, val_loss], [each loss term and its weight]), "final" (the last record),
        "train_seconds", "images_per_s", "resumed_from_epoch", "device", "amp" (the precision
        used, :func:`resolved_amp`), "world_size", "run_dir"}``.
    """
    config = _as_config(config)
    d = setup_distributed()
    try:
        device = resolve_device(device, d)
        with global_state(config, device):
            return _fit(model, train_data, config, d, device, val_data=val_data, run_dir=run_dir,
                        loss_fn=loss_fn, batch_transform=batch_transform, collate_fn=collate_fn,
                        progress=progress, on_epoch_end=on_epoch_end)
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _split_loss(out) -> tuple[torch.Tensor, dict]:
    if isinstance(out, Mapping):
        return out["loss"], {k: v for k, v in out.items() if k != "loss"}
    return out, {}


def _cross_entropy(logits, labels, features, ctx):
    return F.cross_entropy(logits.float(), labels)


def _fit(model, train_data, config: TrainConfig, d: Processes, device: torch.device, *, val_data, run_dir,
         loss_fn, batch_transform, collate_fn, progress, on_epoch_end) -> dict:
    if model is None:
        model = model_from_config(config)
    parts = training_parts(model, config)
    if loss_fn is not None and parts.classification_loss is not None:
        raise ConfigError(f"fit: both loss_fn and the classification loss of TrainConfig.method = "
                          f"{config.method!r} given; keep one.")
    classification_loss = loss_fn or parts.classification_loss or _cross_entropy
    if batch_transform is not None and parts.batch_transform is not None:
        raise ConfigError("fit: both batch_transform and a batch transform in TrainConfig.method given; keep one.")
    batch_transform = batch_transform or parts.batch_transform

    channels_last = use_channels_last(config, device)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    normalize = Normalize(config, device, channels_last)
    train_batches = make_batches(train_data, config, device, d, normalize, True, collate_fn,
                                 parts.batch_sampler, list(parts.targets))
    val_batches = (make_batches(val_data, config, device, d, normalize, False, collate_fn)
                   if val_data is not None else None)
    spe = train_batches.steps
    if spe < 1:
        raise ConfigError(
            f"fit: {len(train_data)} training samples over {d.world} process(es) give no full batch of "
            f"{config.batch_size}; lower TrainConfig.batch_size."
        )
    optimizer = make_optimizer(model, config)

    run_path = Path(run_dir) if run_dir is not None else None
    ckpt_path = run_path / "checkpoint.pt" if run_path is not None else None
    start_epoch, step, history = 0, 0, []
    d.barrier()  # rank 0 may still be writing the checkpoint of a previous call
    if ckpt_path is not None and ckpt_path.exists():
        start_epoch, step, history = _resume(ckpt_path, config, model, optimizer, device)
        if d.rank == 0:
            atomic_write_text("".join(json.dumps(r) + "\n" for r in history), run_path / "log.jsonl")
    elif run_path is not None and d.rank == 0:
        run_path.mkdir(parents=True, exist_ok=True)
        (run_path / "log.jsonl").unlink(missing_ok=True)

    net = model
    if d.active:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    total_steps = config.epochs * spe

    run_name = run_path.name if run_path is not None else config.model
    trained_seconds = 0.0
    bar = None
    if _progress_enabled(progress, d) and start_epoch < config.epochs:
        from tqdm.auto import tqdm

        bar = tqdm(total=total_steps, initial=start_epoch * spe, desc=f"{config.model}", unit="step",
                   dynamic_ncols=True)
    # On the CPU, one process: as many threads as other processes leave cores free. Not for a
    # deterministic run: the number of threads decides the order of floating-point sums, and
    # a resumed run must end with the weights of an uninterrupted one.
    adapt = device.type == "cpu" and not d.active and not config.deterministic
    governor = ThreadGovernor() if adapt else None
    try:
        for epoch in range(start_epoch, config.epochs):
            threads = governor.update() if governor is not None else None
            seed_epoch(config, epoch, d.rank)
            net.train()
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            correct = torch.zeros((), device=device, dtype=torch.float64)
            seen = torch.zeros((), device=device, dtype=torch.float64)
            term_sums: dict[str, torch.Tensor] = {}
            for images, labels, targets, batch in train_batches.epoch(epoch):
                factor = lr_factor(config, step, spe)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                if batch_transform is not None:
                    images = batch_transform(images)
                ctx = StepContext(images, targets, batch, epoch, step, spe, step / total_steps, model)
                with autocast(config, device):
                    logits, features = net(images)
                    loss, logged = _split_loss(classification_loss(logits, labels, features, ctx))
                    for name, term in parts.losses.items():
                        weight = term.weight_at(ctx)
                        value, extra = _split_loss(term.fn(logits, labels, features, ctx))
                        loss = loss + weight * value
                        logged.update({name: value, f"{name}_weight": weight, **extra})
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                with torch.no_grad():
                    loss_sum += loss.detach().double() * labels.numel()
                    correct += (logits.argmax(1) == labels).sum()
                    seen += labels.numel()
                    for k, v in logged.items():
                        term = torch.as_tensor(v, device=device).detach().double() * labels.numel()
                        term_sums[k] = term_sums.get(k, 0) + term
                if bar is not None:
                    bar.update(1)
            stats = torch.stack([loss_sum, correct, seen] + [term_sums[k] for k in sorted(term_sums)])
            if d.active:
                dist.all_reduce(stats)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
            values = stats.tolist()
            n_seen = max(values[2], 1)
            record = {
                "epoch": epoch + 1,
                "loss": values[0] / n_seen,
                "train_acc": values[1] / n_seen,
                "lr": optimizer.param_groups[0]["lr"],
                "seconds": seconds,
                "images_per_s": values[2] / seconds,
            }
            if threads is not None:
                record["cpu_threads"] = threads
            for k, v in zip(sorted(term_sums), values[3:]):
                record[k] = v / n_seen
            if val_batches is not None and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                # The plain module: DDP's forward would broadcast buffers, a collective that
                # hangs when ranks hold different numbers of validation batches.
                record["val_acc"], record["val_loss"] = _evaluate(model, val_batches, config, device, d)
            history.append(record)
            trained_seconds += seconds
            _report_progress(run_name, record, config.epochs, trained_seconds, start_epoch, d)
            if bar is not None:
                bar.set_postfix(epoch=epoch + 1, loss=f"{record['loss']:.3f}", acc=f"{record['train_acc']:.3f}",
                                **({"val": f"{record['val_acc']:.3f}"} if "val_acc" in record else {}))
            if ckpt_path is not None and d.rank == 0:
                atomic_save({
                    "format": CHECKPOINT_FORMAT,
                    "epoch": epoch + 1,
                    "model": unwrap(model).state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": {"step": step},
                    "config": config.to_dict(),
                    "history": history,
                }, ckpt_path)
                with open(run_path / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            if on_epoch_end is not None:
                on_epoch_end(record)
    finally:
        if bar is not None:
            bar.close()
        if governor is not None:
            governor.restore()
    d.barrier()
    return {
        "epochs": config.epochs,
        "history": history,
        "final": history[-1] if history else None,
        "train_seconds": sum(r["seconds"] for r in history),
        "images_per_s": (sum(r["images_per_s"] * r["seconds"] for r in history)
                         / max(sum(r["seconds"] for r in history), 1e-12)),
        "resumed_from_epoch": start_epoch or None,
        "device": str(device),
        "amp": resolved_amp(config, device),
        "world_size": d.world,
        "run_dir": str(run_path) if run_path is not None else None,
    }
