"""Checks that several method test files share."""

from __future__ import annotations

import torch

from wsolkit.runs import load_model
from wsolkit.train import TrainConfig, fit, toy_data


def toy_method_config(method, **overrides):
    """A tiny deterministic fp32 run of ``method`` on 32 toy images of 16 px, 4 classes."""
    base = dict(model="simple_gap", model_kwargs={"widths": [8, 8, 16, 16]}, num_classes=4,
                image_size=16, epochs=2, batch_size=8, lr=0.05, hflip=False,
                deterministic=True, amp="off", method=method,
                extra={"toy_data": {"num_samples": 32}})
    base.update(overrides)
    return TrainConfig(**base)


def assert_trains_exactly_like_cam(tmp_path, cam_config, off_config):
    """Train ``cam_config`` (plain CAM) and ``off_config`` (a method with every term at weight
    0) on the same toy data; every tensor the CAM network has must end identical. Returns the
    method's trained model, for checks of its own parts."""
    train, _ = toy_data(cam_config)
    fit(None, train, cam_config, run_dir=tmp_path / "cam", progress=False)
    fit(None, train, off_config, run_dir=tmp_path / "off", progress=False)
    cam, off = load_model(tmp_path / "cam"), load_model(tmp_path / "off")
    for name, value in cam.state_dict().items():
        torch.testing.assert_close(off.state_dict()[name], value, rtol=0, atol=0, msg=name)
    return off
