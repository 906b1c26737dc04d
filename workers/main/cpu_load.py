"""The worker's CPU load (main process): what `load_fnc` never reports less than.

A daemon thread samples livekit's own cgroup-aware monitor (what LiveKit reports by default)
and keeps a moving average. The thread survives a failing monitor: each kind of error is
logged once, sampling goes on, and while samples fail the reported value is the average of
the last good ones (0.0 before the first).
"""

from __future__ import annotations

import math
import threading

from livekit.agents import utils
from livekit.agents.utils.hw import CPUMonitor, get_cpu_monitor

from config.logging import get_logger

log = get_logger("workers.main.cpu_load")

MAX_LOGGED_KINDS = 8  # a monitor raising ever-new types must not grow the log without end


class CpuLoad:
    """CPU use 0..1 averaged over `samples` x `interval_s` (~2.5 s). The thread starts on
    first use; `monitor` defaults to livekit's `get_cpu_monitor()`."""

    def __init__(
        self, samples: int = 5, interval_s: float = 0.5, monitor: CPUMonitor | None = None
    ) -> None:
        self._avg = utils.MovingAverage(samples)
        self._interval_s = interval_s
        self._monitor = monitor
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged_kinds: set[str] = set()
        self.failures = 0  # samples that failed since start

    def __call__(self) -> float:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="cpu_load", daemon=True)
                self._thread.start()
            return float(self._avg.get_avg())

    def close(self, timeout: float | None = None) -> None:
        """Stop sampling (the thread ends after its current sample)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sample = self._sample()
            except Exception as e:  # the thread must outlive any monitor error
                self._failed(e)
                self._stop.wait(self._interval_s)  # a monitor failing at once must not spin
                continue
            with self._lock:
                self._avg.add_sample(sample)

    def _sample(self) -> float:
        if self._monitor is None:
            self._monitor = get_cpu_monitor()  # reads /sys/fs/cgroup: may fail, retried
        sample = float(self._monitor.cpu_percent(interval=self._interval_s))
        if not math.isfinite(sample):  # one NaN would poison the average for good
            raise ValueError(f"CPU monitor returned {sample!r}, not a number in 0..1")
        return min(max(sample, 0.0), 1.0)

    def _failed(self, error: Exception) -> None:
        with self._lock:
            self.failures += 1
            kind = type(error).__name__
            if kind in self._logged_kinds or len(self._logged_kinds) >= MAX_LOGGED_KINDS:
                return
            self._logged_kinds.add(kind)
            fallback = float(self._avg.get_avg())
        log.warning(
            "cpu_load_sample_failed",
            error=repr(error)[:200],
            kind=kind,
            fallback_load=round(fallback, 4),
            hint="sampling goes on; the load reported is the last good average",
        )
