"""The run cache: hashing, no retraining, provenance, corrupt files, model reloading."""

import hashlib
import json

import pytest
import torch

from wsolkit.runs import (
    RunCacheError,
    RunCacheWarning,
    cached_run,
    config_hash,
    load_model,
    provenance_table,
    run_dir_for,
)
from wsolkit.train import TrainConfig, fit, model_from_config, toy_images


def tiny_config(**overrides):
    base = dict(model="simple_gap", model_kwargs={"widths": [4, 4, 8, 8]}, num_classes=4, image_size=16,
                epochs=2, batch_size=16)
    base.update(overrides)
    return TrainConfig(**base)


class Trainer:
    """A train_fn that counts its calls."""

    def __init__(self, config):
        self.config, self.calls = config, 0

    def __call__(self, run_dir):
        self.calls += 1
        summary = fit(None, toy_images(32, 16, 4, 0), self.config, run_dir=run_dir, progress=False)
        return {"train_acc": summary["final"]["train_acc"], "calls": self.calls}


def test_config_hash_is_sorted_json_without_speed_only_fields():
    assert config_hash({"b": 2, "a": [1, 2]}) == hashlib.sha256(b'{"a":[1,2],"b":2}').hexdigest()[:10]
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    cfg = tiny_config()
    assert config_hash(cfg) == config_hash(tiny_config(num_workers=4))
    assert config_hash(cfg) != config_hash(tiny_config(seed=1))
    assert config_hash(cfg) == config_hash(cfg.to_dict())


def test_second_call_reads_the_cache(tmp_path):
    cfg = tiny_config()
    trainer = Trainer(cfg)
    first = cached_run("cam", cfg, trainer, runs_root=tmp_path)
    second = cached_run("cam", cfg, trainer, runs_root=tmp_path)
    assert trainer.calls == 1
    assert not first.cached and second.cached
    assert second.metrics == first.metrics and second.run_dir == first.run_dir
    assert first.run_dir == tmp_path / f"cam-{config_hash(cfg)}"
    assert sorted(p.name for p in first.run_dir.iterdir()) == ["checkpoint.pt", "config.json", "log.jsonl",
                                                               "results.json"]
    assert len(second.log()) == cfg.epochs
    # A speed-only change hits the same entry; a result-changing one makes a new run.
    assert cached_run("cam", tiny_config(num_workers=1), trainer, runs_root=tmp_path).cached
    other = cached_run("cam", tiny_config(lr=0.01), trainer, runs_root=tmp_path)
    assert not other.cached and other.run_dir != first.run_dir and trainer.calls == 2


def test_results_carry_provenance(tmp_path):
    record = cached_run("prov", tiny_config(), Trainer(tiny_config()), runs_root=tmp_path)
    saved = json.loads((record.run_dir / "results.json").read_text())
    prov = saved["provenance"]
    assert prov["git_commit"] == "unknown" or len(prov["git_commit"]) == 40
    assert set(prov["versions"]) == {"python", "torch", "torchvision", "numpy", "wsolkit"}
    assert prov["versions"]["torch"] == torch.__version__
    assert prov["device"] and prov["wall_seconds"] > 0 and prov["started"] <= prov["finished"]
    assert saved["config"] == {k: v for k, v in tiny_config().to_dict().items() if k != "num_workers"}
    assert saved["config_hash"] == config_hash(tiny_config())


def test_provenance_table_says_which_numbers_come_from_the_cache(tmp_path):
    class Summary(Trainer):
        def __call__(self, run_dir):
            return {**super().__call__(run_dir), "amp": "off"}

    cfg = tiny_config()
    fresh = cached_run("a", cfg, Summary(cfg), runs_root=tmp_path)
    again = cached_run("a", cfg, Summary(cfg), runs_root=tmp_path)
    table = provenance_table([fresh, again])
    assert list(table["source"]) == ["trained now", "run cache"]
    assert list(table["precision"]) == ["off", "off"]
    assert list(table["split"]) == ["-", "-"]  # a configuration without data_extra
    commit = fresh.provenance["git_commit"]
    assert table["commit"].iloc[0].rstrip("+") == commit[:8]
    assert table["device"].iloc[1] == again.provenance["device"]
    assert table["minutes"].iloc[0] == round(fresh.provenance["wall_seconds"] / 60, 1)


def test_corrupt_results_are_moved_aside_and_the_run_redone(tmp_path):
    cfg = tiny_config()
    trainer = Trainer(cfg)
    record = cached_run("c", cfg, trainer, runs_root=tmp_path)
    results = record.run_dir / "results.json"
    results.write_text('{"metrics": {"train_acc": 0.9')  # truncated
    with pytest.warns(RunCacheWarning, match="results.json.corrupt"):
        redone = cached_run("c", cfg, trainer, runs_root=tmp_path)
    assert trainer.calls == 2 and not redone.cached
    assert (record.run_dir / "results.json.corrupt").exists()
    assert json.loads(results.read_text())["metrics"]["calls"] == 2
    assert cached_run("c", cfg, trainer, runs_root=tmp_path).cached and trainer.calls == 2


def test_results_of_another_configuration_raise(tmp_path):
    cfg = tiny_config()
    record = cached_run("x", cfg, Trainer(cfg), runs_root=tmp_path)
    saved = json.loads((record.run_dir / "results.json").read_text())
    saved["config"]["lr"] = 1.0
    (record.run_dir / "results.json").write_text(json.dumps(saved))
    with pytest.raises(RunCacheError, match=r"\['lr'\]"):
        cached_run("x", cfg, Trainer(cfg), runs_root=tmp_path)


def test_env_var_sets_the_default_root_and_names_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("WSOL_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert run_dir_for("a", tiny_config()).parent == tmp_path / "elsewhere"
    assert run_dir_for("a", tiny_config(), tmp_path).parent == tmp_path
    with pytest.raises(ValueError, match="run name"):
        run_dir_for("../escape", tiny_config())


def test_load_model_restores_the_trained_weights(tmp_path):
    cfg = tiny_config(method={"adl": {"positions": ["pool3"]}})
    trained = model_from_config(cfg)

    def train_fn(run_dir):
        fit(trained, toy_images(32, 16, 4, 0), cfg, run_dir=run_dir, progress=False)
        return {}

    record = cached_run("m", cfg, train_fn, runs_root=tmp_path)
    loaded = record.load_model()
    assert not loaded.training and "pool3" in loaded.plugins
    for key, value in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    class Stop(Exception):
        pass

    def stop(record):
        raise Stop

    longer = tiny_config(epochs=3)
    with pytest.raises(Stop):
        fit(None, toy_images(32, 16, 4, 0), longer, run_dir=tmp_path / "partial", progress=False, on_epoch_end=stop)
    with pytest.raises(RunCacheError, match="epoch 1 of 3"):
        load_model(tmp_path / "partial")
    assert load_model(tmp_path / "partial", allow_incomplete=True) is not None
    with pytest.raises(RunCacheError, match="never trained"):
        load_model(tmp_path / "nothing")
