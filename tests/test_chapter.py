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
