"""What the chapter notebooks share: train-or-reuse a run, here, in parallel processes or on
several GPUs.

A chapter describes each model it needs with a :class:`wsolkit.train.TrainConfig` whose
``extra`` names the training data (``{"dataset": "cub", "data_root": ..., "split": "train"}``).
:func:`train_or_load` then returns the cached run, or trains it: in the notebook's own process
(``launcher="local"``), or through ``torchrun`` on ``K`` GPUs (``launcher="torchrun:K"``), in
which case each process rebuilds the data with :func:`training_data` from the configuration
alone.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from wsolkit.profiles import ParameterError, check_choice, data_dir, runs_dir
from wsolkit.runs import RunRecord, cached_run, read_log
from wsolkit.train import TensorImages, TrainConfig, fit, method_targets, preload

_DATASETS = ("cub", "ilsvrc", "coco_crops")
# Keys of TrainConfig.extra that are not options of the dataset loader.
_NOT_LOADER_OPTIONS = ("dataset", "data_root", "split", "chapter", "preload", "split_fingerprint",
                       "degenerate_boxes_left_out")


#: How a configuration names a dataset root inside the data folder (:func:`wsolkit.profiles.data_dir`).
DATA_DIR_TOKEN = "$WSOL_DATA_DIR"


def data_extra(dataset: str, root: str | os.PathLike, split: str = "train", **options) -> dict:
    """The ``TrainConfig.extra`` entry that names a run's training data.

    A root inside the data folder is written relative to it (``$WSOL_DATA_DIR/synthetic/cub``), so
    a configuration, and with it the run cache's hash, does not depend on where the project is
    checked out; any other root is written as an absolute path. The entry also holds the split's
    ``annotation_fingerprint`` (image files, labels, boxes; not the pixels), so a run trained on
    another version of the split (an edited ``train_test_split.txt``, say) is never reused.
    """
    check_choice("dataset", dataset, _DATASETS)
    root = Path(root).resolve()
    try:
        named = f"{DATA_DIR_TOKEN}/{root.relative_to(data_dir().resolve()).as_posix()}"
    except ValueError:
        named = str(root)
    loader_options = {k: v for k, v in options.items() if k not in _NOT_LOADER_OPTIONS}
    fingerprint, left_out = _split_facts(dataset, str(root), split,
                                         json.dumps(loader_options, sort_keys=True),
                                         _tree_signature(root))
    extra = {"dataset": dataset, "data_root": named, "split": split, **options,
             "split_fingerprint": fingerprint}
    # Boxes of the official release left out of training (COCO's zero-height boxes): part of
    # the run's provenance. Absent when there are none, so that clean data keep their hashes.
    if left_out:
        extra["degenerate_boxes_left_out"] = left_out
    return extra


def _tree_signature(root: Path) -> tuple:
    """What changes when a split's annotations can change: every top-level file's size and
    modification time, and every folder's modification time (a folder's changes when a file
    in it is added, removed or renamed)."""
    signature = []
    for folder, _, files in os.walk(root):
        signature.append((folder, os.stat(folder).st_mtime_ns))
        if folder == str(root):
            for name in sorted(files):
                stat = os.stat(os.path.join(folder, name))
                signature.append((name, stat.st_size, stat.st_mtime_ns))
    return tuple(signature)


@functools.lru_cache(maxsize=32)
def _split_facts(dataset: str, root: str, split: str, options: str, signature: tuple
                 ) -> tuple[str, int]:
    # A chapter names the same split in every run's configuration, and reading a split's
    # annotations (every image's size, for CUB) takes about a second: read it once for as long
    # as the tree's signature stays the same.
    from wsolkit.data import get_dataset

    data = get_dataset(dataset, root, split, **json.loads(options))
    return data.annotation_fingerprint(), int(getattr(data, "num_degenerate_boxes", 0) or 0)


def data_root_of(extra: dict) -> Path:
    """The dataset root a configuration's ``extra`` names (the inverse of :func:`data_extra`)."""
    named = str(extra["data_root"])
    if named == DATA_DIR_TOKEN or named.startswith(DATA_DIR_TOKEN + "/"):
        return data_dir() / named[len(DATA_DIR_TOKEN):].lstrip("/")
    return Path(named)


def training_data(config: TrainConfig):
    """The training data a configuration names (the ``--data`` factory of ``python -m wsolkit.train``).

    Small splits (the embedded benchmark, CUB) are decoded once into memory at
    ``config.image_size``; ILSVRC's 1.28 million images are streamed with the standard random
    resized crops and flips (``wsolkit.data.train_transform``), and the COCO object crops with
    Barz & Denzler's augmentation when ``extra["preload"]`` is false.
    """
    from wsolkit.data import get_dataset, train_transform

    extra = config.extra
    missing = [k for k in ("dataset", "data_root", "split") if k not in extra]
    if missing:
        raise ParameterError(
            f"TrainConfig.extra lacks {missing}; build it with wsolkit.chapter.data_extra(...)")
    options = {k: v for k, v in extra.items() if k not in _NOT_LOADER_OPTIONS}

    def build(**transform):
        dataset = get_dataset(extra["dataset"], data_root_of(extra), extra["split"], **options, **transform)
        expected = extra.get("split_fingerprint")
        if expected is not None and dataset.annotation_fingerprint() != expected:
            raise ParameterError(
                f"{dataset!r}: its annotations have fingerprint {dataset.annotation_fingerprint()} but "
                f"the configuration was made for {expected}; the split changed since (an edited "
                "annotation file?): make the configuration anew with wsolkit.chapter.data_extra.")
        return dataset

    # Per-image targets the methods train against are computed from the original images,
    # cached on disk and moved with every crop and flip (wsolkit.train.targets).
    targets = method_targets(config)
    if extra["dataset"] == "ilsvrc" and not extra.get("preload", False):
        transform = train_transform(config.image_size, normalize=False)
        if targets:
            from wsolkit.train.targets import WithTargets

            return WithTargets(build(), targets, transform)
        return build(transform=transform)
    if extra["dataset"] == "coco_crops" and not extra.get("preload", True):
        from wsolkit.methods.cosine_dcm import object_crop_transform

        return build(transform=object_crop_transform(config.image_size))
    return preload(build(), config.image_size, targets=targets)


def _launcher_processes(launcher: str) -> int:
    if launcher == "local":
        return 0
    prefix, _, count = launcher.partition(":")
    if prefix != "torchrun" or not count.isdigit() or int(count) < 1:
        raise ParameterError(f"unknown launcher {launcher!r}; expected 'local' or 'torchrun:K' "
                             "with K the number of GPUs, e.g. 'torchrun:8'")
    return int(count)


def _torchrun(config_path: Path, run_dir: Path, processes: int) -> dict:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    command = [torchrun, "--standalone", f"--nproc_per_node={processes}", "-m", "wsolkit.train",
               "--config", str(config_path), "--run-dir", str(run_dir),
               "--data", "wsolkit.chapter:training_data", "--progress", "off"]
    print("launching:", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    history = read_log(run_dir)
    return {"epochs": len(history), "final": history[-1] if history else None,
            "launcher": f"torchrun:{processes}"}


def train_or_load(name: str, config: TrainConfig, train_data: TensorImages | None = None, *,
                  launcher: str = "local", progress: bool | str = "auto") -> RunRecord:
    """The cached run ``name`` under ``config``; trains it first when the cache has none.

    Args:
        name: run name; the run lives in ``runs/<name>-<hash of config>/``.
        config: the run's configuration; ``config.extra`` names the data (:func:`data_extra`).
        train_data: already loaded training data for local training; default: built from the
            configuration with :func:`training_data`.
        launcher: ``"local"`` (this process, CPU or one GPU) or ``"torchrun:K"`` (K processes,
            one per GPU, through ``torch.distributed``).
        progress: progress bars for local training.
    """
    processes = _launcher_processes(launcher)

    def train(run_dir: Path) -> dict:
        if processes:
            # cached_run has written the configuration to config.json before calling us.
            return _torchrun(run_dir / "config.json", run_dir, processes)
        data = train_data if train_data is not None else training_data(config)
        summary = fit(None, data, config, run_dir=run_dir, progress=progress)
        return {k: v for k, v in summary.items() if k != "history"}

    return cached_run(name, config, train, runs_root=runs_dir())


#: ``WSOL_PARALLEL_RUNS=N`` trains up to N independent runs at once on a CPU;
#: ``1`` trains them one after the other. Default: :func:`parallel_runs`.
PARALLEL_RUNS_ENV = "WSOL_PARALLEL_RUNS"


def parallel_runs() -> int:
    """How many independent runs :func:`train_or_load_all` trains at once here:
    ``WSOL_PARALLEL_RUNS`` if set; else 1 with a GPU (each run takes the whole device) or on a
    CPU that computes bf16 natively, and ``min(2, cores)`` on a CPU without (fp32 training).

    Measured on two cores (``benchmarks/README.md``, "Several models at once"): in fp32, two
    single-threaded processes train the book's small convolutions 1.3x faster than one process
    with two threads; in bf16 on a CPU with AMX, one two-threaded process is faster for CAM
    (two workers took 11.5 minutes for chapter 00's six runs, one after the other 9.6), while
    chapter 04's heavier runs still gained about 1.25x.

    Raises:
        ParameterError: ``WSOL_PARALLEL_RUNS`` is not a positive integer.
    """
    import torch

    from wsolkit.train import cpu_has_native_bf16

    value = os.environ.get(PARALLEL_RUNS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ParameterError(f"{PARALLEL_RUNS_ENV}={value!r}; expected a positive integer "
                                 "(1 trains one run at a time).")
        return int(value)
    if torch.cuda.is_available() or cpu_has_native_bf16():
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def _train_one(name: str, config_path: str) -> None:
    """The worker of :func:`train_or_load_all`: one run, trained through the run cache."""
    config = TrainConfig.from_json(config_path)
    train_or_load(name, config, progress=False)


def _train_in_processes(pending, processes: int) -> None:
    import tempfile
    import time

    # Each worker's thread governor sees the other workers as busy cores: two workers train
    # with one thread each, and the last one left takes every core again (wsolkit.train.threads).
    env = dict(os.environ)
    code = ("import sys; from wsolkit.chapter import _train_one; "
            "_train_one(sys.argv[1], sys.argv[2])")
    queue, running, failed = list(pending), [], []
    with tempfile.TemporaryDirectory(prefix="wsol-runs-") as folder:
        while queue or running:
            while queue and len(running) < processes:
                name, config = queue.pop(0)
                config_path = Path(folder) / f"{name}.json"
                config_path.write_text(json.dumps(config.to_dict()))
                log = open(Path(folder) / f"{name}.log", "w+")
                child = subprocess.Popen([sys.executable, "-c", code, name, str(config_path)],
                                         env=env, stdout=log, stderr=subprocess.STDOUT)
                running.append((name, child, log))
            done = [entry for entry in running if entry[1].poll() is not None]
            if not done:
                time.sleep(0.5)
                continue
            for name, child, log in done:
                running.remove((name, child, log))
                if child.returncode != 0:
                    log.seek(0)
                    failed.append(f"{name} (exit {child.returncode}):\n{log.read()[-3000:]}")
                log.close()
    if failed:
        raise RuntimeError("training failed in a worker process: " + "\n".join(failed))


def train_or_load_all(runs, *, launcher: str = "local", progress: bool | str = "auto",
                      train_data=None) -> dict:
    """:func:`train_or_load` of many runs: ``{key: (name, config)} -> {key: RunRecord}``.

    Runs the cache lacks are trained first, :func:`parallel_runs` at a time, each in a worker
    process of its own with its data rebuilt from its configuration (:func:`training_data`);
    then every record is read through :func:`train_or_load`. Where :func:`parallel_runs` is 1
    (a GPU, native bf16, ``WSOL_PARALLEL_RUNS=1``), with another launcher or with one run to
    train, each run trains in this process, one after the other, from ``train_data``
    (``{key: data}``) where given.
    """
    from wsolkit.runs import run_dir_for

    train_data = train_data or {}
    pending = {}  # by run folder: a run named under two keys trains once
    for name, config in runs.values():
        folder = run_dir_for(name, config, runs_dir())
        if not (folder / "results.json").exists():
            pending.setdefault(folder, (name, config))
    pending = list(pending.values())
    processes = parallel_runs() if launcher == "local" else 1
    if processes > 1 and len(pending) > 1:
        _train_in_processes(pending, min(processes, len(pending)))
    return {key: train_or_load(name, config, train_data.get(key), launcher=launcher,
                               progress=progress)
            for key, (name, config) in runs.items()}
