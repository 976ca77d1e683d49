"""The training engine: configuration, schedules, data paths, exact resume, atomic checkpoints."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset, TensorDataset

import wsolkit.train.precision
from wsolkit.methods import HideAndSeek
from wsolkit.train import (
    CheckpointError,
    ConfigError,
    TensorImages,
    TrainConfig,
    fit,
    load_checkpoint,
    lr_factor,
    model_from_config,
    preload,
    resolved_amp,
    toy_images,
)

REPO = Path(__file__).resolve().parents[1]


def tiny_config(**overrides):
    base = dict(model="simple_gap", model_kwargs={"widths": [8, 8, 16, 16]}, num_classes=4, image_size=16,
                epochs=4, batch_size=16, lr=0.1, weight_decay=1e-4, deterministic=True)
    base.update(overrides)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- configuration


def test_config_round_trips_through_json_and_rejects_unknown_fields(tmp_path):
    cfg = tiny_config(method={"hide_and_seek": {"patch": 4, "p": 0.5}}, crop_scale=0.5)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg.to_dict()))
    again = TrainConfig.from_json(path)
    assert again == cfg and again.to_dict() == cfg.to_dict()
    with pytest.raises(ConfigError, match="valid fields"):
        TrainConfig.from_dict({**cfg.to_dict(), "learning_rate": 0.1})
    with pytest.raises(ConfigError, match="optimizer"):
        tiny_config(optimizer="rmsprop")
    with pytest.raises(ConfigError, match="JSON"):
        tiny_config(extra={"f": object()})


def test_normalization_is_the_trained_mean_and_std_and_no_field_of_the_run_key():
    cfg = tiny_config(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    assert cfg.normalization == {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3)}
    assert "normalization" not in cfg.to_dict()


def test_head_lr_multiplier_defaults_to_10_only_when_pretrained():
    assert tiny_config().resolved_head_lr_mult() == 1.0
    assert tiny_config(model="vgg16_gap", model_kwargs={"pretrained": True}).resolved_head_lr_mult() == 10.0
    assert tiny_config(head_lr_mult=3.0).resolved_head_lr_mult() == 3.0


def test_lr_schedules_by_hand():
    spe = 10
    constant = tiny_config(schedule="constant", epochs=4, warmup_epochs=1)
    assert [lr_factor(constant, s, spe) for s in (0, 4, 9, 10, 39)] == [0.1, 0.5, 1.0, 1.0, 1.0]
    step = tiny_config(schedule="step", epochs=6, step_size=2, lr_gamma=0.1)
    assert [lr_factor(step, s, spe) for s in (0, 19, 20, 39, 40)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    cosine = tiny_config(schedule="cosine", epochs=4)
    assert [lr_factor(cosine, s, spe) for s in (0, 20, 30)] == pytest.approx([1.0, 0.5, 0.5 * (1 + math.cos(0.75 * math.pi))])
    floor = tiny_config(schedule="cosine", epochs=4, min_lr_ratio=0.2)
    assert lr_factor(floor, 20, spe) == pytest.approx(0.6)
    # SGDR, cycles of 1, 2, 4 epochs: restarts at epochs 1 and 3; halfway points at 0.5 and 2.
    sgdr = tiny_config(schedule="sgdr", epochs=7, cycle_epochs=1, cycle_mult=2)
    got = [lr_factor(sgdr, s, spe) for s in (0, 5, 9, 10, 20, 29, 30, 50)]
    assert got[:2] == pytest.approx([1.0, 0.5]) and got[2] < 0.03
    assert got[3:5] == pytest.approx([1.0, 0.5]) and got[5] < 0.01
    assert got[6:] == pytest.approx([1.0, 0.5])


# ----------------------------------------------------------------------------- training


def test_fit_learns_and_restores_the_callers_global_state():
    torch.manual_seed(123)
    rng_before = torch.get_rng_state()
    summary = fit(None, toy_images(128, 16, 4, 0), tiny_config(epochs=4), val_data=toy_images(64, 16, 4, 1),
                  progress=False)
    assert summary["final"]["val_acc"] >= 0.9  # chance is 0.25
    assert summary["history"][0]["loss"] > 2 * summary["final"]["loss"]
    assert [r["epoch"] for r in summary["history"]] == [1, 2, 3, 4]
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert not torch.are_deterministic_algorithms_enabled()


def test_fit_reports_each_epoch_to_the_progress_file_and_a_resume_counts_from_its_start(
        tmp_path, monkeypatch):
    from wsolkit.train.loop import PROGRESS_FILE_ENV

    progress = tmp_path / "progress.jsonl"
    monkeypatch.setenv(PROGRESS_FILE_ENV, str(progress))
    run = tmp_path / "my-run"
    fit(None, toy_images(64, 16, 4, 0), tiny_config(epochs=2), run_dir=run, progress=False)
    fit(None, toy_images(64, 16, 4, 0), tiny_config(epochs=3), run_dir=tmp_path / "other",
        progress=False)
    lines = [json.loads(line) for line in progress.read_text().splitlines()]
    assert [(x["run"], x["epoch"], x["epochs"]) for x in lines] == [
        ("my-run", 1, 2), ("my-run", 2, 2), ("other", 1, 3), ("other", 2, 3), ("other", 3, 3)]
    assert all(x["images_per_s"] > 0 and x["start_epoch"] == 0 for x in lines)
    assert lines[1]["seconds"] > lines[0]["seconds"]


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_is_bf16_on_cuda_and_on_cpus_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(wsolkit.train.precision, "cpu_has_native_bf16", lambda: native)
    auto, off, bf16 = tiny_config(), tiny_config(amp="off"), tiny_config(amp="bf16")
    assert resolved_amp(auto, "cpu") == ("bf16" if native else "off")
    assert resolved_amp(auto, "cuda") == "bf16"
    assert resolved_amp(off, "cuda") == "off" and resolved_amp(bf16, "cpu") == "bf16"
    summary = fit(None, toy_images(32, 16, 4, 0), tiny_config(epochs=1), progress=False)
    assert summary["amp"] == ("bf16" if native else "off")


@pytest.mark.parametrize("setting, native", [("0", False), ("1", True)])
def test_the_environment_overrides_the_detected_bf16_capability(monkeypatch, setting, native):
    monkeypatch.setenv("WSOL_NATIVE_BF16", setting)
    assert wsolkit.train.precision.cpu_has_native_bf16() is native
    assert resolved_amp(tiny_config(), "cpu") == ("bf16" if native else "off")
    monkeypatch.setenv("WSOL_NATIVE_BF16", "yes")
    with pytest.raises(ValueError, match="WSOL_NATIVE_BF16='yes': expected 0"):
        wsolkit.train.precision.cpu_has_native_bf16()


def test_bf16_training_on_the_cpu_learns():
    summary = fit(None, toy_images(128, 16, 4, 0), tiny_config(epochs=4, amp="bf16"),
                  val_data=toy_images(64, 16, 4, 1), progress=False)
    assert summary["amp"] == "bf16"
    assert summary["final"]["val_acc"] >= 0.9  # chance is 0.25


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if atol:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)
        else:
            assert torch.equal(a[k], b[k]), k


class Stop(Exception):
    pass


def test_resume_after_an_exception_gives_the_uninterrupted_weights(tmp_path):
    # Every random stream in play: shuffling, flips, crops, Hide-and-Seek, ADL's draws.
    cfg = tiny_config(epochs=4, crop_scale=0.5, method={"hide_and_seek": {"patch": 4, "p": 0.3},
                                                       "adl": {"positions": ["pool3"], "drop_rate": 0.5}})
    data = toy_images(64, 16, 4, 0)
    reference = model_from_config(cfg)
    full = fit(reference, data, cfg, run_dir=tmp_path / "full", progress=False)

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Stop

    interrupted = model_from_config(cfg)
    with pytest.raises(Stop):
        fit(interrupted, data, cfg, run_dir=tmp_path / "cut", progress=False, on_epoch_end=stop_after_two)
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    resumed = model_from_config(cfg)  # fresh weights: everything must come from the checkpoint
    summary = fit(resumed, data, cfg, run_dir=tmp_path / "cut", progress=False)
    assert summary["resumed_from_epoch"] == 2
    _assert_same_weights(_weights(resumed), _weights(reference))
    assert [r["loss"] for r in summary["history"]] == [r["loss"] for r in full["history"]]
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    # A finished run returns at once, with its weights.
    again = model_from_config(cfg)
    assert fit(again, data, cfg, run_dir=tmp_path / "cut", progress=False)["history"] == summary["history"]
    _assert_same_weights(_weights(again), _weights(reference))


def test_resume_after_sigkill_of_the_command_line_run(tmp_path):
    cfg = tiny_config(epochs=6, extra={"toy_data": {"num_samples": 64}})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg.to_dict()))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsolkit.train", "--config", str(tmp_path / "cfg.json"),
         "--run-dir", str(run_dir), "--data", "wsolkit.train:toy_data", "--progress", "off"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    log = run_dir / "log.jsonl"
    deadline = time.time() + 50
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed_at = load_checkpoint(run_dir / "checkpoint.pt")["epoch"]
    assert 2 <= killed_at < cfg.epochs
    from wsolkit.train import toy_data

    train, val = toy_data(cfg)
    resumed = model_from_config(cfg)
    summary = fit(resumed, train, cfg, val_data=val, run_dir=run_dir, progress=False)
    assert summary["resumed_from_epoch"] == killed_at
    reference = model_from_config(cfg)
    fit(reference, train, cfg, val_data=val, progress=False)
    _assert_same_weights(_weights(resumed), _weights(reference), atol=1e-6)


def test_checkpoint_holds_only_tensors_and_primitives_and_no_temp_files(tmp_path):
    cfg = tiny_config(epochs=2)
    fit(None, toy_images(32, 16, 4, 0), cfg, run_dir=tmp_path, progress=False)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # raises on any other object
    assert set(ckpt) == {"format", "epoch", "model", "optimizer", "scheduler", "config", "history"}
    assert ckpt["config"] == cfg.to_dict() and ckpt["scheduler"] == {"step": 4}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "log.jsonl"]


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path):
    data = toy_images(32, 16, 4, 0)
    fit(None, data, tiny_config(epochs=1), run_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match=r"\['lr'\]"):
        fit(None, data, tiny_config(epochs=1, lr=0.2), run_dir=tmp_path, progress=False)
    # num_workers does not change results: accepted.
    fit(None, data, tiny_config(epochs=1, num_workers=1), run_dir=tmp_path, progress=False)
    (tmp_path / "checkpoint.pt").write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="Delete it"):
        fit(None, data, tiny_config(epochs=1), run_dir=tmp_path, progress=False)


class DictSamples(Dataset):
    """Sample dicts as wsolkit's datasets give them after a transform."""

    def __init__(self, data: TensorImages, scale=1.0):
        self.data, self.scale = data, scale

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return {"image": self.data.images[i].float() / 255 * self.scale, "label": int(self.data.labels[i]),
                "boxes": torch.zeros(1, 4), "image_id": str(i)}


def test_tuple_and_dict_datasets_train_alike_and_misfits_raise():
    data = toy_images(64, 16, 4, 0)
    cfg = tiny_config(epochs=2, hflip=False)
    a, b = model_from_config(cfg), model_from_config(cfg)
    sa = fit(a, TensorDataset(data.images, data.labels), cfg, progress=False)
    sb = fit(b, DictSamples(data), cfg, progress=False)
    _assert_same_weights(_weights(a), _weights(b), atol=1e-6)
    assert sa["final"]["train_acc"] == sb["final"]["train_acc"]
    with pytest.raises(ConfigError, match="normalize=False"):
        fit(None, DictSamples(data, scale=3.0), cfg, progress=False)
    with pytest.raises(ConfigError, match="image_size"):
        fit(None, DictSamples(data), tiny_config(image_size=32), progress=False)


def test_dataset_resume_with_workers_is_exact(tmp_path):
    data = DictSamples(toy_images(64, 16, 4, 0))
    cfg = tiny_config(epochs=2, num_workers=1)
    reference = model_from_config(cfg)
    fit(reference, data, cfg, progress=False)

    def stop(record):
        if record["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        fit(None, data, cfg, run_dir=tmp_path, progress=False, on_epoch_end=stop)
    resumed = model_from_config(cfg)
    fit(resumed, data, cfg, run_dir=tmp_path, progress=False)
    _assert_same_weights(_weights(resumed), _weights(reference))


def test_tensor_augmentation_flips_and_identity_crop():
    from wsolkit.train.batches import Normalize, make_batches
    from wsolkit.train.distributed import Processes

    data = toy_images(16, 16, 4, 0)
    cfg = tiny_config(batch_size=16, normalize=False)
    dev = torch.device("cpu")
    batches = make_batches(data, cfg, dev, Processes(), Normalize(cfg, dev, False), train=True)
    images, labels, _, _ = next(batches.epoch(0))
    originals = data.images[_order(cfg, 16)].float() / 255
    flipped = torch.tensor([torch.equal(i, o.flip(2)) for i, o in zip(images, originals)])
    same = torch.tensor([torch.equal(i, o) for i, o in zip(images, originals)])
    assert torch.all(flipped | same) and flipped.any() and same.any()
    identity = make_batches(data, tiny_config(batch_size=16, normalize=False, hflip=False, crop_scale=1.0),
                            dev, Processes(), Normalize(cfg, dev, False), train=True)
    images, _, _, _ = next(identity.epoch(0))
    torch.testing.assert_close(images, originals, atol=1e-5, rtol=0)


def _order(cfg, n):
    from wsolkit.train.distributed import STREAM_ORDER, derive_seed

    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, 0, 0, STREAM_ORDER)))


def test_a_classification_loss_passed_to_fit_and_its_terms_are_logged():
    def loss_fn(logits, labels, features, ctx):
        ce = torch.nn.functional.cross_entropy(logits, labels)
        reg = 0.5 * features["cam"].abs().mean()
        assert 0.0 <= ctx.progress < 1.0 and ctx.images.shape[0] == labels.shape[0]
        return {"loss": ce + reg, "ce": ce, "cam_l1": reg}

    summary = fit(None, toy_images(32, 16, 4, 0), tiny_config(epochs=1), loss_fn=loss_fn, progress=False)
    rec = summary["final"]
    assert rec["loss"] == pytest.approx(rec["ce"] + rec["cam_l1"], rel=1e-6)
    with pytest.raises(ConfigError, match="unknown field.*loss"):
        TrainConfig.from_dict({**tiny_config().to_dict(), "loss": "ce"})
    with pytest.raises(ConfigError, match="keep one"):
        fit(None, toy_images(32, 16, 4, 0), tiny_config(method={"cosine": {}}), loss_fn=loss_fn,
            progress=False)


def test_batch_transform_from_two_places_is_refused():
    cfg = tiny_config(method={"hide_and_seek": {"patch": 4}})
    with pytest.raises(ConfigError, match="keep one"):
        fit(None, toy_images(32, 16, 4, 0), cfg, batch_transform=HideAndSeek(4), progress=False)


def test_preload_decodes_pil_and_tensor_samples():
    class Mixed(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            if i == 0:
                return {"image": Image.new("RGB", (40, 20), (10, 200, 30)), "label": 2, "image_id": "a"}
            if i == 1:
                return {"image": torch.full((3, 8, 8), 0.5), "label": 1, "image_id": "b"}
            return (torch.zeros(3, 16, 16), 0)

    out = preload(Mixed(), 16, batch_size=2)
    assert out.images.shape == (3, 3, 16, 16) and out.images.dtype == torch.uint8
    assert out.labels.tolist() == [2, 1, 0] and out.ids is None
    assert out.images[0, :, 5, 5].tolist() == [10, 200, 30]
    assert torch.all(out.images[1] == 128) and torch.all(out.images[2] == 0)
