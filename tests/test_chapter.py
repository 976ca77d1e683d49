"""What chapters share: data named in configurations, train-or-reuse through the run cache."""

import shutil
from pathlib import Path

import pytest

from wsolkit.chapter import DATA_DIR_TOKEN, data_extra, data_root_of, train_or_load, training_data
from wsolkit.profiles import ParameterError
from wsolkit.runs import config_hash
from wsolkit.train import TrainConfig, toy_images


FIXTURE_CUB = Path(__file__).parent / "fixtures" / "cub"


def _config(extra):
    return TrainConfig(model="simple_gap", model_kwargs={"widths": [4, 4, 8, 8]}, num_classes=4,
                       image_size=16, epochs=1, batch_size=16, amp="off", extra=extra)


def test_a_root_in_the_data_folder_is_named_relative_to_it(tmp_path, monkeypatch):
    hashes = []
    for checkout in ("a", "b"):
        data = tmp_path / checkout / "data"
        shutil.copytree(FIXTURE_CUB, data / "synthetic" / "cub")
        monkeypatch.setenv("WSOL_DATA_DIR", str(data))
        extra = data_extra("cub", data / "synthetic" / "cub", val_per_class=1)
        assert extra["data_root"] == f"{DATA_DIR_TOKEN}/synthetic/cub"
        assert data_root_of(extra) == data / "synthetic" / "cub"
        hashes.append(config_hash(_config(extra)))
    # The same data under two checkouts: the same configuration, so the same cached run.
    assert hashes[0] == hashes[1]


def test_a_root_elsewhere_is_named_by_its_absolute_path(tmp_path, monkeypatch):
    monkeypatch.setenv("WSOL_DATA_DIR", str(tmp_path / "data"))
    elsewhere = tmp_path / "datasets" / "CUB_200_2011"
    shutil.copytree(FIXTURE_CUB, elsewhere)
    extra = data_extra("cub", elsewhere, val_per_class=1)
    assert extra["data_root"] == str(elsewhere.resolve()) and extra["val_per_class"] == 1
    assert data_root_of(extra) == elsewhere.resolve()
    with pytest.raises(ParameterError, match="unknown dataset 'voc'"):
        data_extra("voc", elsewhere)


def test_runs_are_keyed_by_the_split_not_by_the_folder_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("WSOL_DATA_DIR", str(tmp_path / "data"))
    root = tmp_path / "data" / "cub"
    shutil.copytree(FIXTURE_CUB, root)
    before = data_extra("cub", root, val_per_class=1)
    config = _config(before)
    assert len(before["split_fingerprint"]) == 12
    assert len(training_data(config)) > 0  # the split is what the configuration was made for
    # Image 4 moves from the test split to the training split, in place.
    split = root / "train_test_split.txt"
    split.write_text(split.read_text().replace("4 0\n", "4 1\n"))
    after = data_extra("cub", root, val_per_class=1)
    assert after["split_fingerprint"] != before["split_fingerprint"]
    assert config_hash(_config(after)) != config_hash(config)
    with pytest.raises(ParameterError, match="the split changed"):
        training_data(config)


def test_train_or_load_trains_once_then_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WSOL_RUNS_DIR", str(tmp_path / "runs"))
    config = _config({"dataset": "cub", "data_root": "unused: the data is passed in", "split": "train"})
    data = toy_images(32, 16, 4, 0)
    first = train_or_load("toy", config, data, progress=False)
    second = train_or_load("toy", config, data, progress=False)
    assert not first.cached and second.cached
    assert Path(first.run_dir) == Path(second.run_dir) and (Path(first.run_dir) / "checkpoint.pt").is_file()
    assert second.metrics["amp"] == "off"
    with pytest.raises(ParameterError, match="unknown launcher 'slurm'"):
        train_or_load("toy", config, data, launcher="slurm")


def _fixture_runs(seeds, **overrides):
    from dataclasses import replace

    from wsolkit.data import CUBDataset

    classes = CUBDataset(FIXTURE_CUB, "train", val_per_class=1).num_classes
    config = _config(data_extra("cub", FIXTURE_CUB, val_per_class=1))
    return {seed: (f"parallel-s{seed}", replace(config, num_classes=classes, seed=seed, **overrides))
            for seed in seeds}


def test_independent_runs_train_in_one_thread_processes_and_are_read_from_the_cache(tmp_path, monkeypatch):
    from wsolkit.chapter import train_or_load_all

    monkeypatch.setenv("WSOL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("WSOL_PARALLEL_RUNS", "2")
    monkeypatch.setenv("WSOL_CPU_THREADS", "1")  # the workers inherit the environment
    runs = _fixture_runs((0, 1, 2), batch_size=2)
    records = train_or_load_all(runs, progress=False)
    assert sorted(records) == [0, 1, 2]
    for seed, record in records.items():
        # Trained by a worker (which wrote results.json with its own provenance), read back here.
        assert record.cached and record.provenance["wall_seconds"] > 0
        assert record.config["seed"] == seed
        assert {entry["cpu_threads"] for entry in record.log()} == {1}
    again = train_or_load_all(runs, progress=False)
    assert {k: r.run_dir for k, r in again.items()} == {k: r.run_dir for k, r in records.items()}


def test_a_failing_worker_names_its_run(tmp_path, monkeypatch):
    from wsolkit.chapter import train_or_load_all

    monkeypatch.setenv("WSOL_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("WSOL_PARALLEL_RUNS", "2")
    runs = _fixture_runs((0, 1), batch_size=2, model="no_such_network")
    with pytest.raises(RuntimeError, match=r"parallel-s0 \(exit 1\)(.|\n)*no_such_network"):
        train_or_load_all(runs, progress=False)


@pytest.mark.parametrize("value, expected", [("1", 1), ("3", 3), ("0", None), ("two", None)])
def test_the_number_of_parallel_runs_can_be_fixed(monkeypatch, value, expected):
    from wsolkit.chapter import parallel_runs

    monkeypatch.setenv("WSOL_PARALLEL_RUNS", value)
    if expected is None:
        with pytest.raises(ParameterError, match="WSOL_PARALLEL_RUNS"):
            parallel_runs()
    else:
        assert parallel_runs() == expected


def test_runs_train_in_parallel_by_default_only_where_the_cpu_trains_in_fp32(monkeypatch):
    import os

    import torch

    from wsolkit.chapter import parallel_runs

    monkeypatch.delenv("WSOL_PARALLEL_RUNS", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WSOL_NATIVE_BF16", "0")
    assert parallel_runs() == max(1, min(2, os.cpu_count() or 1))
    monkeypatch.setenv("WSOL_NATIVE_BF16", "1")  # bf16 with AMX: one two-threaded process wins
    assert parallel_runs() == 1


def test_a_splits_facts_are_read_once_until_its_tree_changes(tmp_path, monkeypatch):
    import wsolkit.chapter as chapter

    root = tmp_path / "cub"
    shutil.copytree(FIXTURE_CUB, root)
    chapter._split_facts.cache_clear()
    first = data_extra("cub", root, val_per_class=1)
    again = data_extra("cub", root, val_per_class=1)
    assert again == first and chapter._split_facts.cache_info().hits == 1
    before = chapter._tree_signature(root)
    (next(p for p in (root / "images").iterdir() if p.is_dir()) / "extra.jpg").write_bytes(b"")
    assert chapter._tree_signature(root) != before  # a file added deep in the tree is seen
