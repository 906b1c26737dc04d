"""The CPU load sampler survives a failing monitor (issue 10, item 6). The sampling thread is
driven step by step by a scripted monitor: no sleeps, every wait is on an Event."""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pytest
from livekit.agents.utils.hw import CPUMonitor
from structlog.testing import capture_logs

from workers.main.cpu_load import CpuLoad

WAIT_S = 5.0  # an upper bound for a condition that holds in microseconds


class Pause:
    """A step at which the sampling thread stops until the test releases it."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()


Step = float | Exception | Pause


class ScriptedMonitor(CPUMonitor):
    """Plays its steps in order, one per `cpu_percent` call (a Pause does not count as one);
    once they run out it returns 0.0 until the sampler is closed."""

    def __init__(self, steps: Iterable[Step]) -> None:
        self._steps = list(steps)
        self.calls = 0

    def cpu_count(self) -> float:
        return 1.0

    def cpu_percent(self, interval: float = 0.5) -> float:
        self.calls += 1
        while self._steps:
            step = self._steps.pop(0)
            if isinstance(step, Pause):
                step.reached.set()
                assert step.release.wait(WAIT_S), "the test never released the pause"
                continue
            if isinstance(step, Exception):
                raise step
            return step
        return 0.0


def reach(pause: Pause) -> None:
    assert pause.reached.wait(WAIT_S), "the sampling thread never got there (did it die?)"


def test_the_load_keeps_updating_after_monitor_errors_and_falls_back_meanwhile():
    first, second = Pause(), Pause()
    monitor = ScriptedMonitor(
        [
            0.2,
            OSError("cgroup cpu.stat vanished"),
            OSError("still gone"),
            first,  # two errors in: the thread is alive, the value is the last good one
            0.6,
            ValueError("torn read"),
            0.4,
            second,
        ]
    )
    load = CpuLoad(samples=5, interval_s=0, monitor=monitor)
    with capture_logs() as events:
        try:
            assert load() == 0.0  # first use starts the thread
            reach(first)
            assert load() == pytest.approx(0.2)
            first.release.set()
            reach(second)
            assert load() == pytest.approx((0.2 + 0.6 + 0.4) / 3)
            assert load.failures == 3
            second.release.set()
        finally:
            load.close(timeout=WAIT_S)
    failed = [e for e in events if e["event"] == "cpu_load_sample_failed"]
    assert [e["kind"] for e in failed] == ["OSError", "ValueError"]  # once per kind
    assert failed[0]["fallback_load"] == 0.2
    assert "cgroup cpu.stat vanished" in failed[0]["error"]


def test_a_monitor_returning_nan_does_not_poison_the_average():
    done = Pause()
    monitor = ScriptedMonitor([0.5, float("nan"), 1.7, -0.2, done])
    load = CpuLoad(samples=3, interval_s=0, monitor=monitor)
    try:
        load()
        reach(done)
        assert load() == pytest.approx((0.5 + 1.0 + 0.0) / 3)  # NaN skipped, others clamped
        assert load.failures == 1
        done.release.set()
    finally:
        load.close(timeout=WAIT_S)


def sampler_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "cpu_load"}


def test_close_ends_the_thread():
    before = sampler_threads()  # other tests' samplers may still run
    load = CpuLoad(interval_s=0, monitor=ScriptedMonitor([]))
    load()
    assert len(sampler_threads() - before) == 1
    load.close(timeout=WAIT_S)
    assert sampler_threads() - before == set()
