"""The training engine every notebook uses: :class:`TrainConfig` and :func:`fit`.

============================ ==================================================================
module                       what it holds
============================ ==================================================================
``config``                   :class:`TrainConfig`, the JSON-serialisable description of a run
``model``                    :func:`model_from_config`: the backbone with its methods' parts
``data``                     :class:`TensorImages`, :func:`preload`, the toy sets
``targets``                  per-image targets: computed once, cached on disk, moved with images
``batches``                  batches on the device (in memory or through a ``DataLoader``)
``distributed``              one process or several (``torchrun``), random streams per epoch
``precision``                bf16 autocast and channels-last
``optim``                    the optimiser and the learning-rate schedule
``loop``                     :func:`fit`, :func:`evaluate_accuracy`
``cli``                      ``python -m wsolkit.train`` (the ``torchrun`` entry point)
============================ ==================================================================

Checkpoints and atomic files are :mod:`wsolkit.io`'s; methods are :mod:`wsolkit.methods`'.

One function trains any :mod:`wsolkit.models` backbone, on the CPU or a GPU, in one process or
data-parallel under ``torchrun``, and resumes exactly where a killed run stopped:

* **Data.** Either a ``torch.utils.data.Dataset`` (sample dicts as in :mod:`wsolkit`'s
  conventions, or ``(image, label)`` tuples) read through a ``DataLoader``, or a
  :class:`TensorImages`: ``uint8`` images and labels held in memory (on the device), batched,
  flipped and cropped there. On small data the per-epoch decoding of image files costs more than
  the model on two CPU cores; :func:`preload` decodes a dataset once into a :class:`TensorImages`.
  Both paths normalise with ``config.mean`` / ``config.std`` on the device.
* **Optimisation.** SGD (momentum, Nesterov), Adam or AdamW with two parameter groups (backbone,
  new head: :func:`wsolkit.models.parameter_groups`); the learning rate follows
  :func:`lr_factor` and is set at every step.
* **Speed.** bf16 autocast on GPUs and on CPUs with native bf16, channels-last memory format on
  GPUs and CPUs (``"auto"``), optional ``torch.compile``.
* **Reproducibility.** The data order, the augmentation and the global random state (dropout,
  ADL, Hide-and-Seek) of epoch ``e`` are all derived from ``(config.seed, e, rank)``, so a run
  resumed at epoch ``e`` needs no pickled random state and ends with the same weights as an
  uninterrupted one. The caller's random state and PyTorch's global flags are restored on return.
* **Checkpoints.** ``run_dir/checkpoint.pt`` after every epoch, written atomically
  (:func:`wsolkit.io.atomic_save`) and holding only tensors and primitives, read back with
  ``torch.load(..., weights_only=True)`` (:func:`wsolkit.io.load_checkpoint`); ``run_dir/log.jsonl``
  has one JSON line per epoch.
* **Distributed.** Under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set), :func:`fit`
  joins the process group (NCCL on GPUs, Gloo on CPUs), shards the data, wraps the model in
  ``DistributedDataParallel`` and logs, shows progress and writes checkpoints on rank 0 only.
  ``config.batch_size`` is per process: 2 processes of batch ``b`` take the same steps as one
  process of batch ``2b``. Command line: ``torchrun --nproc_per_node 2 -m wsolkit.train
  --config cfg.json --run-dir runs/x --data wsolkit.train:toy_data``.
"""

from __future__ import annotations

from wsolkit.io import CHECKPOINT_FORMAT, CheckpointError, atomic_save, atomic_write_text, load_checkpoint
from wsolkit.methods.registry import StepContext

from .cli import main
from .config import IMAGENET_MEAN, IMAGENET_STD, NON_RESULT_FIELDS, ConfigError, TrainConfig, result_fields
from .data import TensorImages, preload, toy_data, toy_images
from .loop import evaluate_accuracy, fit
from .model import method_targets, model_from_config, training_parts
from .optim import lr_factor
from .precision import cpu_has_native_bf16, resolved_amp

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "ConfigError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NON_RESULT_FIELDS",
    "StepContext",
    "TensorImages",
    "TrainConfig",
    "atomic_save",
    "atomic_write_text",
    "cpu_has_native_bf16",
    "evaluate_accuracy",
    "fit",
    "load_checkpoint",
    "lr_factor",
    "main",
    "method_targets",
    "model_from_config",
    "preload",
    "resolved_amp",
    "result_fields",
    "toy_data",
    "toy_images",
    "training_parts",
]
