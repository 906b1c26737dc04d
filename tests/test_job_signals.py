"""workers/job_signals.py reads livekit's job-process internals; these fail loudly if the shape
it relies on changes. What it is for (a drain timeout ends the room at once, as `shutdown`) is
tested on the real server in tests/live/test_workers.py."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace

from livekit.agents.ipc import job_proc_lazy_main

from workers.job_signals import job_stop_requested


def test_livekit_still_wires_the_job_contexts_shutdown_to_the_process_future():
    proc = job_proc_lazy_main._JobProc
    start_job = inspect.getsource(proc._start_job)
    assert "def _on_ctx_shutdown" in start_job
    assert "self._shutdown_fut.set_result" in start_job
    assert "on_shutdown=_on_ctx_shutdown" in start_job
    # ShutdownRequest from the worker resolves the same future
    assert "ShutdownRequest" in inspect.getsource(proc.entrypoint)
    assert "self._shutdown_fut.set_result" in inspect.getsource(proc.entrypoint)


async def test_it_finds_the_future_behind_a_shutdown_closure():
    owner = SimpleNamespace(_shutdown_fut=asyncio.get_running_loop().create_future())

    def _on_ctx_shutdown(reason: str) -> None:
        owner._shutdown_fut.set_result(reason)

    ctx = SimpleNamespace(_on_shutdown=_on_ctx_shutdown)
    assert job_stop_requested(ctx) is owner._shutdown_fut
    assert job_stop_requested(SimpleNamespace()) is None
