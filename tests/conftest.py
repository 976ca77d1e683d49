"""Fixtures several test files share."""

import shutil
from pathlib import Path

import pytest

FIXTURE_CUB = Path(__file__).parent / "fixtures" / "cub"


@pytest.fixture
def cub_root(tmp_path, monkeypatch):
    """The CUB fixture copied into a data folder (``$WSOL_DATA_DIR``), with one validation
    image named: the fixture has too few images for the default hold-out."""
    data = tmp_path / "data"
    root = data / "synthetic" / "cub"
    shutil.copytree(FIXTURE_CUB, root)
    train_ids = [line.split()[0] for line in (root / "train_test_split.txt").read_text()
                 .splitlines() if line.split()[1] == "1"]
    (root / "val_images.txt").write_text(train_ids[0] + "\n")
    monkeypatch.setenv("WSOL_DATA_DIR", str(data))
    return root
