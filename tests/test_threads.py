"""CPU threads give way to other processes and come back when the cores are free again."""

import pytest
import torch

from wsolkit.train import threads as threads_module
from wsolkit.train.threads import ThreadGovernor


class _Clock:
    """Wall clock, system busy seconds and this process's CPU seconds, advanced by hand."""

    def __init__(self):
        self.wall, self.busy, self.own = 100.0, 50.0, 10.0

    def epoch(self, seconds, own_cores, other_cores):
        self.wall += seconds
        self.own += seconds * own_cores
        self.busy += seconds * (own_cores + other_cores)


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(threads_module.time, "perf_counter", lambda: c.wall)
    monkeypatch.setattr(threads_module.time, "process_time", lambda: c.own)
    monkeypatch.setattr(threads_module, "_system_busy_seconds", lambda: c.busy)
    return c


def test_threads_follow_the_cores_other_processes_leave_free(clock, monkeypatch):
    monkeypatch.setattr(threads_module.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        governor = ThreadGovernor("auto")
        assert governor.update() == 2  # nothing measured yet: every core
        clock.epoch(5.0, own_cores=1.3, other_cores=0.95)  # a busy process took a core
        assert governor.update() == 1 and torch.get_num_threads() == 1
        clock.epoch(5.0, own_cores=1.0, other_cores=0.9)
        assert governor.update() == 1
        clock.epoch(5.0, own_cores=1.0, other_cores=0.1)  # it ended
        assert governor.update() == 2
        clock.epoch(5.0, own_cores=2.0, other_cores=0.4)  # a browser's trickle: keep both
        assert governor.update() == 2
        governor.restore()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


def test_a_fixed_number_of_threads_is_kept_and_a_bad_setting_is_named(clock):
    saved = torch.get_num_threads()
    try:
        governor = ThreadGovernor("1")
        clock.epoch(5.0, own_cores=1.0, other_cores=0.0)
        assert governor.update() == 1
        governor.restore()
        assert torch.get_num_threads() == saved
    finally:
        torch.set_num_threads(saved)
    for bad in ("two", "0"):
        with pytest.raises(ValueError, match="WSOL_CPU_THREADS"):
            ThreadGovernor(bad)


def test_a_deterministic_run_keeps_its_threads_while_another_process_is_busy(monkeypatch):
    """Exact resume needs the same floating-point sums: no thread changes in deterministic runs."""
    from wsolkit.train import TrainConfig, fit, toy_images

    made = []
    monkeypatch.setattr("wsolkit.train.loop.ThreadGovernor",
                        lambda *a, **k: made.append(1) or ThreadGovernor("1"))
    config = TrainConfig(model="simple_gap", model_kwargs={"widths": [8, 8, 16, 16]},
                         num_classes=4, image_size=16, epochs=1, batch_size=16,
                         deterministic=True)
    summary = fit(None, toy_images(32, 16, 4, 0), config, progress=False)
    assert made == [] and "cpu_threads" not in summary["history"][0]
    fit(None, toy_images(32, 16, 4, 0), TrainConfig(**{**config.to_dict(), "deterministic": False}),
        progress=False)
    assert made == [1]
