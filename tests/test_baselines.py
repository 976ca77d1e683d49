"""The shared baseline runs: the names and configurations every chapter reuses."""

import pytest

from wsolkit.baselines import OWNERS, RECIPES, baseline, baseline_options, recipe, training_config
from wsolkit.profiles import ParameterError
from wsolkit.runs import config_hash, run_dir_for
from wsolkit.train.config import result_fields


def test_baselines_are_named_after_the_chapter_that_trained_them(cub_root):
    settings = recipe("default")
    name, config = baseline("cub", "CAM", 1, cub_root, 4, settings=settings)
    assert name == "00_cam_baseline-cam-s1"
    assert config.extra["chapter"] == "00_cam_baseline" and config.method == {}
    name, config = baseline("cub", "ADL", 0, cub_root, 4, settings=settings)
    assert name == "02_improving_cam-cub-adl-s0"
    assert config.method == {"adl": {"positions": ["pool2", "pool3", "block4"],
                                     "drop_rate": 0.75, "gamma": 0.8}}
    assert config.epochs == 30 and config.seed == 0


def test_a_chapters_own_run_differs_from_a_baseline_only_in_what_it_changes(cub_root):
    settings = recipe("default")
    _, adl = baseline("cub", "ADL", 0, cub_root, 4, settings=settings)
    same = training_config("cub", cub_root, 4, 0, baseline_options("ADL", settings),
                           settings=settings, chapter="02_improving_cam")
    # The same method through training_config is the same run: the cache reuses it.
    assert config_hash(same) == config_hash(adl)
    own = training_config("cub", cub_root, 4, 0, {"ass": {"positions": ["pool2"]}},
                          settings=settings, chapter="03_selection_and_hiding")
    a, b = result_fields(adl), result_fields(own)
    differing = {k for k in a if a[k] != b[k]}
    assert differing == {"method", "extra"}
    assert {k for k in a["extra"] if a["extra"][k] != b["extra"][k]} == {"chapter"}


def test_the_default_recipe_keeps_the_hashes_of_the_cached_runs(cub_root):
    # Editing the recipe changes every baseline's hash, and every chapter would retrain them:
    # change this number only on purpose.
    _, config = baseline("cub", "CAM", 0, cub_root, 4, settings=recipe("default"))
    assert run_dir_for("00_cam_baseline-cam-s0", config).name == (
        "00_cam_baseline-cam-s0-" + config_hash(config))
    assert config_hash(config) == "c055ed3857"


def test_the_paper_recipe_shares_nothing_and_a_recipe_is_a_copy(cub_root):
    settings = recipe("paper")
    with pytest.raises(ValueError, match="pass chapter="):
        baseline("cub", "CAM", 0, cub_root, 4, settings=settings)
    name, config = baseline("cub", "CAM", 0, cub_root, 4, settings=settings,
                            chapter="03_selection_and_hiding", lr=1e-3, batch_size=32)
    assert name == "03_selection_and_hiding-cub-cam-s0"
    assert config.lr == 1e-3 and config.batch_size == 32 and config.model == "vgg16_gap"
    settings["epochs"]["cub"] = 1
    assert RECIPES["paper"]["epochs"]["cub"] == 50
    with pytest.raises(ParameterError, match="baseline"):
        baseline_options("ACoL", settings)


def test_hide_and_seek_is_chapter_00s_run_on_cub_and_chapter_04s_on_ilsvrc(cub_root):
    settings = recipe("default")
    name, config = baseline("cub", "HaS", 2, cub_root, 4, settings=settings)
    assert name == "00_cam_baseline-has-s2" and config.extra["chapter"] == "00_cam_baseline"
    assert config.method == {"hide_and_seek": {"patch": 16, "p": 0.5}}
    # Chapter 00's own configuration of its Hide-and-Seek runs, field for field.
    _, cam = baseline("cub", "CAM", 2, cub_root, 4, settings=settings)
    differing = {k for k in cam.to_dict() if cam.to_dict()[k] != config.to_dict()[k]}
    assert differing == {"method"}
    assert OWNERS[("ilsvrc", "HaS")] == "04_saliency_aware"
    assert recipe("paper")["has_patch"] == 56


def test_cutmix_is_the_leaderboards_run_on_both_layouts_with_the_shared_recipe(cub_root):
    settings = recipe("default")
    name, config = baseline("cub", "CutMix", 1, cub_root, 4, settings=settings)
    assert name == "06_leaderboard-cub-cutmix-s1"
    assert config.extra["chapter"] == "06_leaderboard"
    assert config.method == {"cutmix": {"beta": 1.0, "p": 1.0}}
    # Beside the CAM baseline it differs in the method and the owning chapter alone.
    _, cam = baseline("cub", "CAM", 1, cub_root, 4, settings=settings)
    a, b = result_fields(cam), result_fields(config)
    assert {k for k in a if a[k] != b[k]} == {"method", "extra"}
    assert OWNERS[("ilsvrc", "CutMix")] == "06_leaderboard"
