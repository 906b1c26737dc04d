"""The job process's own stop signal, which livekit-agents does not expose.

When the worker asks a job to stop (its drain timeout ran out, the server terminated the job),
livekit sets a future in the job process and then waits up to 15 s for the entrypoint to return
before cancelling it; shutdown callbacks run only after that. A room must end at once instead,
by its rules (`shutdown`), so the entrypoint watches that future itself. JobContext holds no
public handle to it: its `_on_shutdown` callback is a closure over the job-process object that
owns `_shutdown_fut` (livekit-agents 1.8, `ipc/job_proc_lazy_main.py`). This function alone
reads it; tests/test_job_signals.py fails if livekit changes that shape.
"""

from __future__ import annotations

import asyncio
from typing import Any


def job_stop_requested(ctx: Any) -> asyncio.Future[Any] | None:
    """The future livekit resolves when this job is asked to stop, or None if not found."""
    callback = getattr(ctx, "_on_shutdown", None)
    for cell in getattr(callback, "__closure__", None) or ():
        try:
            owner = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        future = getattr(owner, "_shutdown_fut", None)
        if isinstance(future, asyncio.Future):
            return future
    return None
