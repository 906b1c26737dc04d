"""What livekit-agents knows about a job but does not expose: its stop signal, the arguments
on_request accepted it with, and the server URL it was assigned. Each function here reads one
private attribute, and tests/test_job_internals.py fails if livekit changes the shape it reads.

The stop signal: when the worker asks a job to stop (its drain timeout ran out, the server
terminated the job), livekit sets a future in the job process and then waits up to 15 s for the
entrypoint to return before cancelling it; shutdown callbacks run only after that. A room must
end at once instead, by its rules (`shutdown`), so the entrypoint watches that future itself.
JobContext holds no public handle to it: its `_on_shutdown` callback is a closure over the
job-process object that owns `_shutdown_fut` (livekit-agents 1.8, `ipc/job_proc_lazy_main.py`).

The accept arguments: the job learns whether on_request accepted it (and so left it a plan)
from `ctx._info.accept_arguments`, which JobContext keeps private; its token's claims carry the
same metadata but are only a fallback.

The exit code: livekit-agents reports a job to the server as failed only when its process
exits non-zero (`JobStatus.SUCCESS if self.exitcode == 0 else JobStatus.FAILED` in
`ipc/job_proc_executor.py`), and a job process whose entrypoint raised still exits 0 after its
cleanup. `fail_job_process` makes it exit 1, through multiprocessing's own exit hooks, which
run once livekit's cleanup is done.

The URL: the server assigns each job the URL to join (`ctx._info.url`, what `ctx.connect()`
uses), which need not be the worker's LIVEKIT_URL (a cloud region, a proxy); the personas the
stage joins itself must use the same one.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livekit.agents import JobContext


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


def accept_metadata(ctx: JobContext) -> str:
    """What on_request passed as accept(metadata=...): the opener's public metadata, empty
    when no on_request ran (`connect --room`).

    Read from the job's RunningJobInfo (`ctx._info.accept_arguments`, private), readable
    BEFORE connecting; the job token's claims are the fallback."""
    args = getattr(getattr(ctx, "_info", None), "accept_arguments", None)
    if args is not None and args.metadata:
        return str(args.metadata)
    try:
        return ctx.token_claims().metadata or ""
    except Exception:
        return ""


def job_url(ctx: JobContext, default: str) -> str:
    """The server URL this job was assigned (`ctx._info.url`, private), else `default`."""
    url = getattr(getattr(ctx, "_info", None), "url", None)
    return url if isinstance(url, str) and url else default


def _exit_failed() -> None:
    raise SystemExit(1)  # not an Exception: multiprocessing's finalizer loop lets it through


def fail_job_process() -> bool:
    """Make this job process exit with status 1 once livekit has cleaned up, so the job is
    reported failed. Only in a job process livekit started (a multiprocessing child); False
    elsewhere (the thread executor, tests, the main process), where nothing is changed."""
    if multiprocessing.parent_process() is None:
        return False
    # The lowest priority: the last of the finalizers multiprocessing runs once the child's
    # run() has returned, so every other one (livekit's included) has run before it.
    multiprocessing.util.Finalize(None, _exit_failed, exitpriority=-(10**9))
    return True
