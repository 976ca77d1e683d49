"""Data-parallel training under torchrun: 2 CPU processes with Gloo against one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from wsolkit.train import TrainConfig, fit, load_checkpoint, model_from_config, toy_data

REPO = Path(__file__).resolve().parents[1]


def _config(batch_size):
    # No BatchNorm (its batch statistics are per process) and no random augmentation: then the
    # two ranks' batches of b together are exactly the single process's batch of 2b. In fp32:
    # bf16 rounds the gradient sums of b and 2b samples differently.
    return TrainConfig(model="simple_gap", model_kwargs={"widths": [8, 8, 16, 16], "batch_norm": False},
                       num_classes=4, image_size=16, epochs=2, batch_size=batch_size, lr=0.1,
                       hflip=False, deterministic=True, amp="off",
                       extra={"toy_data": {"num_samples": 64}})


def _torchrun(cfg_path, run_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "wsolkit.train", "--config", str(cfg_path), "--run-dir", str(run_dir),
         "--data", "wsolkit.train:toy_data", "--progress", "off"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )


def test_two_ranks_of_batch_b_equal_one_process_of_batch_2b(tmp_path):
    ddp_cfg = _config(batch_size=8)
    (tmp_path / "cfg.json").write_text(json.dumps(ddp_cfg.to_dict()))
    run_dir = tmp_path / "ddp"
    out = _torchrun(tmp_path / "cfg.json", run_dir)
    assert out.returncode == 0, out.stderr[-3000:]

    # Rank 0 alone wrote: one checkpoint, one log line per epoch, one printed summary.
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "log.jsonl"]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    summaries = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and summaries[0]["world_size"] == 2

    single_cfg = _config(batch_size=16)
    train, val = toy_data(single_cfg)
    single = model_from_config(single_cfg)
    reference = fit(single, train, single_cfg, val_data=val, progress=False)
    ddp_weights = load_checkpoint(run_dir / "checkpoint.pt")["model"]
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # Loss and accuracy are reduced over both ranks: the same numbers as one process.
    for r_ddp, r_one in zip(log, reference["history"]):
        assert abs(r_ddp["loss"] - r_one["loss"]) < 1e-5
        assert r_ddp["train_acc"] == r_one["train_acc"] and r_ddp["val_acc"] == r_one["val_acc"]

    # Calling the finished run again: both ranks load the checkpoint and stop at once.
    again = _torchrun(tmp_path / "cfg.json", run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout.splitlines()[-1])["resumed_from_epoch"] == 2
    assert len((run_dir / "log.jsonl").read_text().splitlines()) == 2
