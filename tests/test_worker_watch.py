"""A job process notices its worker's main process dying (workers/job/worker_watch.py), under
the same multiprocessing forkserver livekit-agents starts job processes with."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from config.settings import PROJECT_ROOT

# The "worker": starts one child through a forkserver (as livekit does) that watches it and
# writes "watching", then "lost" once the worker is gone; then it waits to be killed.
WORKER = """
import asyncio, multiprocessing, sys, time
from pathlib import Path

def job(out):
    from workers.job.worker_watch import WorkerWatch

    async def main():
        lost = asyncio.Event()
        watch = WorkerWatch(lost.set)
        Path(out).write_text("watching" if watch.start() else "unavailable")
        await asyncio.wait_for(lost.wait(), 60)
        Path(out).write_text("lost")

    asyncio.run(main())

if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    ctx.Process(target=job, args=(sys.argv[1],), daemon=False).start()
    time.sleep(120)
"""


def _wait_for(path: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text() == text:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never said {text!r}: {path.read_text() if path.exists() else ''}")


def test_a_forkserver_child_hears_at_once_that_its_worker_was_killed(tmp_path):
    out = tmp_path / "job.txt"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    worker = subprocess.Popen(
        [sys.executable, str(script), str(out)],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        start_new_session=True,
    )
    try:
        _wait_for(out, "watching")
        worker.send_signal(signal.SIGKILL)  # the main process alone, as the OOM killer does
        worker.wait(timeout=10)
        _wait_for(out, "lost", timeout=5)  # woken by the pidfd: no poll interval to wait out
    finally:
        with contextlib.suppress(ProcessLookupError):  # the forkserver and child, if left
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)


def test_a_process_not_started_by_multiprocessing_has_no_worker_to_watch():
    from workers.job.worker_watch import WorkerWatch, worker_pid

    assert worker_pid() is None
    assert WorkerWatch(lambda: None).start() is False
