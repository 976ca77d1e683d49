"""The method architecture: one file registers every part of a method, found by name.

The toy method of ``tests/toy_method.py`` uses every part (plug-in, auxiliary head reading two
stages, loss against a per-image target with a ramped weight, frozen network, batch sampler,
score map); these tests train it end to end, resume it, run it under torchrun, and check the
registry's and the targets' contracts on hand-made cases.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import toy_method  # noqa: F401  (registers "toy_everything")
import wsolkit.methods.registry as registry
from wsolkit.evaluation import LocalizationSet, cached_evaluation, predict_maps
from wsolkit.methods import (
    ClassGroupSampler,
    MethodError,
    MethodParts,
    TargetSpec,
    available_maps,
    available_methods,
    register_method,
    score_map,
)
from wsolkit.runs import load_model
from wsolkit.train import ConfigError, TensorImages, TrainConfig, fit, load_checkpoint, model_from_config, toy_data
from wsolkit.train.batches import Normalize, make_batches
from wsolkit.train.distributed import Processes
from wsolkit.train.targets import WithTargets, target_map

REPO = Path(__file__).resolve().parents[1]


def toy_config(tmp_path, batch_size=8, epochs=2, **overrides):
    # No BatchNorm and fp32, so that two processes of batch b and one of 2b take the same steps.
    base = dict(model="simple_gap", model_kwargs={"widths": [8, 8, 16, 16], "batch_norm": False},
                num_classes=4, image_size=16, epochs=epochs, batch_size=batch_size, lr=0.05,
                hflip=False, deterministic=True, amp="off",
                method={"toy_everything": {"ramp_epochs": 1.0}},
                extra={"toy_data": {"num_samples": 64, "target_cache": str(tmp_path / "targets")}})
    base.update(overrides)
    return TrainConfig(**base)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------ every part, end to end


def test_the_toy_method_trains_end_to_end_with_every_part(tmp_path):
    config = toy_config(tmp_path)
    train, val = toy_data(config)
    assert set(train.targets) == {"band"}
    summary = fit(None, train, config, val_data=val, run_dir=tmp_path / "run", progress=False)
    first, last = summary["history"]
    for term in ("target", "perceptual", "pairs"):
        assert np.isfinite(last[term]) and last[term] >= 0
    # 64 images in batches of 8: 8 steps an epoch. The target loss ramps in over the first epoch
    # (weights 0, 1/8, ..., 7/8), then stays at 1.
    assert first["target_weight"] == pytest.approx(np.mean(np.arange(8) / 8))
    assert last["target_weight"] == 1.0

    model = load_model(tmp_path / "run")
    assert list(model.plugins) == ["pool1"] and "toy_head" in model.heads
    assert not any(p.requires_grad for p in model.frozen["probe"].parameters())
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model"]
    assert any(k.startswith("frozen.probe.") for k in saved)  # checkpointed, restored by load_model
    # The frozen network did not train; the plug-in and the head did.
    fresh = model_from_config(config)
    torch.testing.assert_close(model.frozen["probe"].network[0].weight, fresh.frozen["probe"].network[0].weight)
    assert not torch.equal(model.plugins["pool1"].scale, fresh.plugins["pool1"].scale)
    with torch.no_grad():
        _, features = model(train.images[:2].float() / 255)
    assert features["toy_head"]["map"].shape == (2, 1, 8, 8)
    assert model.frozen["probe"].training is False and model.train().frozen["probe"].training is False


def test_the_toy_method_resumes_an_interrupted_run_to_identical_weights(tmp_path):
    config = toy_config(tmp_path, epochs=3)
    train, _ = toy_data(config)
    reference = model_from_config(config)
    fit(reference, train, config, progress=False)

    class Stop(Exception):
        pass

    def stop(record):
        if record["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(None, train, config, run_dir=tmp_path / "run", progress=False, on_epoch_end=stop)
    resumed = model_from_config(config)
    summary = fit(resumed, train, config, run_dir=tmp_path / "run", progress=False)
    assert summary["resumed_from_epoch"] == 1
    for key, value in _weights(reference).items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_two_torchrun_ranks_of_the_toy_method_equal_one_process_of_double_batch(tmp_path):
    ddp_cfg = toy_config(tmp_path, batch_size=8)
    (tmp_path / "cfg.json").write_text(json.dumps(ddp_cfg.to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "wsolkit.train", "--config", str(tmp_path / "cfg.json"), "--run-dir", str(tmp_path / "ddp"),
         "--data", "toy_method:toy_data", "--progress", "off"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]

    single_cfg = toy_config(tmp_path, batch_size=16)
    train, _ = toy_data(single_cfg)
    single = model_from_config(single_cfg)
    reference = fit(single, train, single_cfg, progress=False)
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    for r_ddp, r_one in zip(ddp["history"], reference["history"]):
        for term in ("loss", "target", "perceptual", "pairs"):
            assert abs(r_ddp[term] - r_one[term]) < 1e-5, term


# ------------------------------------------------------------------ the registry


def test_a_method_file_dropped_into_the_package_is_found_without_an_import(tmp_path, monkeypatch):
    folder = tmp_path / "more_methods"
    folder.mkdir()
    (folder / "dropped_in.py").write_text(
        "from wsolkit.methods.registry import MethodParts, register_method\n"
        "import torch\n"
        "def build(model, config, p=0.5):\n"
        "    return MethodParts(batch_transform=lambda x: x * p)\n"
        "register_method('dropped_in', build, maps={'dropped_in_map': lambda m, f, c: f['cam'][:, 0]})\n")
    package = sys.modules["wsolkit.methods"]
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))
    monkeypatch.setattr(registry, "_MAPS", dict(registry._MAPS))
    assert "dropped_in" in available_methods() and "dropped_in_map" in available_maps()
    model = model_from_config(TrainConfig(num_classes=4, image_size=16, method={"dropped_in": {"p": 0.25}}))
    assert model.training_parts.batch_transform(torch.ones(1)).item() == 0.25
    sys.modules.pop("wsolkit.methods.dropped_in", None)


def test_every_built_in_method_is_registered_the_one_way():
    assert {"cam", "hide_and_seek", "adl", "cosine", "random_erasing", "wgap"} <= set(available_methods())
    assert {"cam", "recombined", "softmax_weighted", "positive_part", "negative_part",
            "cosine_similarity"} <= set(available_maps())


def test_an_unknown_map_name_is_a_clear_error_listing_the_names():
    with pytest.raises(MethodError, match=r"unknown score map 'camm'.*'cam'.*'recombined'"):
        score_map("camm")
    with pytest.raises(MethodError, match="unknown score map"):
        next(predict_maps(torch.nn.Identity(), torch.zeros(1, 3, 4, 4, dtype=torch.uint8),
                          mean=(0, 0, 0), std=(1, 1, 1), map_name="camm"))


def test_one_map_name_cannot_be_given_to_two_methods():
    with pytest.raises(MethodError, match="'cam' belongs to method 'cam'"):
        register_method("another_cam", maps={"cam": lambda model, features, classes: None})
    assert "another_cam" not in available_methods()


def test_parts_that_a_run_can_hold_once_are_refused_twice_with_the_methods_named():
    config = TrainConfig(num_classes=4, image_size=16,
                         method={"wgap": {}, "toy_pool": {}})
    register_method("toy_pool", lambda model, config: MethodParts(pooling=torch.nn.Identity()))
    with pytest.raises(ConfigError, match=r"\['wgap', 'toy_pool'\] each define a pooling"):
        model_from_config(config)
    with pytest.raises(MethodError, match="not a multiple"):
        ClassGroupSampler(2, 7)


def test_two_different_maps_of_one_run_never_share_a_cache_entry(tmp_path):
    config = toy_config(tmp_path, epochs=1)
    train, _ = toy_data(config)
    fit(None, train, config, run_dir=tmp_path / "run", progress=False)
    data = LocalizationSet(images=train.images[:8], labels=train.labels[:8],
                           boxes=[np.array([[0, 0, 15, 3]], dtype=np.float32)] * 8, masks=None,
                           part_boxes=None, ids=[str(i) for i in range(8)])

    def loader():
        return load_model(tmp_path / "run")

    cam = cached_evaluation(tmp_path / "run", "test", loader, data, config, map_name="cam")
    head = cached_evaluation(tmp_path / "run", "test", loader, data, config, map_name="toy_head_map")
    assert not cam["cached"] and not head["cached"]
    files = sorted(p.name for p in (tmp_path / "run").glob("eval-*.json"))
    assert len(files) == 2 and files[0].startswith("eval-test-cam-") and files[1].startswith("eval-test-toy_head_map-")
    assert cam["loc_curve"].tolist() != head["loc_curve"].tolist()
    again = cached_evaluation(tmp_path / "run", "test", loader, data, config, map_name="toy_head_map")
    assert again["cached"] and again["loc_curve"].tolist() == head["loc_curve"].tolist()


# ------------------------------------------------------------------ per-image targets


def _marked(n=6, size=8):
    """Images whose red channel is a ramp with one hot pixel, and a target equal to red / 255."""
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    images[:, 0] = (torch.arange(size * size).view(size, size) * 3).to(torch.uint8)
    images[:, 1, 2, 1] = 255  # the marker: row 2, column 1
    targets = images[:, :1].float() / 255
    return TensorImages(images, torch.arange(n) % 2, targets={"red": targets})


@pytest.mark.parametrize("crop_scale", [None, 0.5])
def test_targets_take_the_same_flips_and_crops_as_the_images(crop_scale):
    data = _marked()
    config = TrainConfig(num_classes=2, image_size=8, batch_size=6, normalize=False, hflip=True,
                         crop_scale=crop_scale)
    dev = torch.device("cpu")
    batches = make_batches(data, config, dev, Processes(), Normalize(config, dev, False), True,
                           targets=["red"])
    images, _, targets, _ = next(batches.epoch(0))
    # float16 storage of the target: within half a grey level of the image's own red channel.
    torch.testing.assert_close(targets["red"], images[:, :1], atol=2e-3, rtol=0)
    if crop_scale is None:
        columns = images[:, 1, 2].argmax(dim=1).tolist()
        assert set(columns) == {1, 6}  # both outcomes of the flip drawn: unflipped 1, flipped 8 - 1 - 1
        for row, column in enumerate(columns):
            flipped = column == 6
            expected = data.targets["red"][row].float().flip(2) if flipped else data.targets["red"][row].float()
            torch.testing.assert_close(targets["red"][row], expected)


def test_streamed_targets_move_with_the_image_under_crop_and_flip(tmp_path):
    from wsolkit.data import CUBDataset

    root = Path(__file__).parent / "fixtures" / "cub"
    spec = TargetSpec(lambda rgb: rgb[..., 0].astype(np.float32) / 255, "red-v1")
    transform = v2.Compose([v2.ToImage(), v2.RandomCrop(8), v2.RandomHorizontalFlip(0.5),
                            v2.ToDtype(torch.float32, scale=True)])
    data = WithTargets(CUBDataset(root, "test"), {"red": spec}, transform, cache=tmp_path)
    for seed in range(8):  # several random crops and flips
        torch.manual_seed(seed)
        sample = data[0]
        assert sample["target:red"].shape == (1, 8, 8)
        torch.testing.assert_close(sample["target:red"][0], sample["image"][0], atol=1e-6, rtol=0)
    with pytest.raises(Exception, match="transform of its own"):
        WithTargets(CUBDataset(root, "test", transform=transform), {"red": spec})


def test_targets_are_cached_by_the_source_image_and_the_computation(tmp_path):
    calls = []

    def compute(rgb):
        calls.append(1)
        return np.full(rgb.shape[:2], 0.5, dtype=np.float32)

    path = tmp_path / "a.png"
    Image.new("RGB", (5, 4), (1, 2, 3)).save(path)
    spec = TargetSpec(compute, "half-v1")
    first = target_map(spec, Image.open(path), path=path, cache=tmp_path / "cache")
    again = target_map(spec, Image.open(path), path=path, cache=tmp_path / "cache")
    assert first.shape == (4, 5) and np.array_equal(first, again) and len(calls) == 1
    target_map(TargetSpec(compute, "half-v2"), Image.open(path), path=path, cache=tmp_path / "cache")
    assert len(calls) == 2  # a new key: computed again
    Image.new("RGB", (5, 4), (9, 9, 9)).save(path)
    target_map(spec, Image.open(path), path=path, cache=tmp_path / "cache")
    assert len(calls) == 3  # new bytes in the file: computed again
    bad = TargetSpec(lambda rgb: np.full(rgb.shape[:2], 2.0), "bad-v1")
    with pytest.raises(ValueError, match=r"a\.png.*expected \(4, 5\) finite values in \[0, 1\]"):
        target_map(bad, Image.open(path), path=path, cache=tmp_path / "cache")


def test_training_without_the_targets_a_method_needs_names_them(tmp_path):
    config = toy_config(tmp_path, epochs=1)
    from wsolkit.train import toy_images

    with pytest.raises(ConfigError, match=r"target\(s\) \['band'\].*method_targets"):
        fit(None, toy_images(64, 16, 4), config, progress=False)


def test_preload_computes_targets_from_the_original_image_and_resizes_them_as_the_image(tmp_path):
    from wsolkit.data import CUBDataset
    from wsolkit.train import preload

    root = Path(__file__).parent / "fixtures" / "cub"
    spec = TargetSpec(lambda rgb: rgb[..., 0].astype(np.float32) / 255, "red-v1")
    data = preload(CUBDataset(root, "test"), 16, targets={"red": spec}, target_cache=tmp_path)
    assert data.targets["red"].shape == (len(data), 1, 16, 16)
    # The same PIL bilinear resize as the image: within the image's own 8-bit rounding.
    torch.testing.assert_close(data.targets["red"].float()[:, 0], data.images[:, 0].float() / 255,
                               atol=1 / 255 + 2e-3, rtol=0)
    subset = data.subset([1, 0])
    assert torch.equal(subset.targets["red"][0], data.targets["red"][1])
