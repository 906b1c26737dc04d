"""Noticing, in a job process, that the worker's main process is gone.

A job process outlives its worker when the main process dies alone (the OOM killer, SIGKILL to
its PID, a crash): the room must still end by its rules and its transcript end. livekit-agents
learns it too (its IPC socket closes), but only to tear the job down: it cancels the entrypoint
as its event loop shuts down, so the room could only end as `cancelled`, after the teardown.

How: a pidfd of the main process (Linux 5.3+, `os.pidfd_open`) on the job's event loop. It
becomes readable when that process exits, whatever killed it: no polling, no signal handler.
The alternatives do not fit livekit's forkserver. The IPC socket is livekit's (private, read
by its own task). PR_SET_PDEATHSIG fires when the *parent* dies, and a job's parent is the
forkserver, not the main process: it dies only as a consequence (it exits on EOF from the
main process), and a signal would need a handler of its own. The main process's PID is
multiprocessing's record of who started this process (`multiprocessing.parent_process()`,
public): under the forkserver that is the main process, which asked the forkserver for it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Callable

from config.logging import get_logger

log = get_logger("workers.job.worker_watch")


def worker_pid() -> int | None:
    """The PID of the worker's main process, seen from a job process (None elsewhere)."""
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else None


def _is_ancestor(pid: int) -> bool:
    """Whether `pid` is this process's parent or grandparent (the forkserver's parent): a
    PID that is neither has been reused by another process after the worker died."""
    parent = os.getppid()
    if parent == pid:
        return True
    try:
        with open(f"/proc/{parent}/stat", encoding="ascii") as f:
            # "pid (comm) state ppid ...": comm may hold spaces or ")", so split after the last
            return int(f.read().rsplit(")", 1)[1].split()[1]) == pid
    except (OSError, ValueError, IndexError):
        return False


class WorkerWatch:
    """Calls `on_lost` once, on the running loop, when the worker's main process exits."""

    def __init__(self, on_lost: Callable[[], None], pid: int | None = None) -> None:
        self._on_lost = on_lost
        self._pid = pid if pid is not None else worker_pid()
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> bool:
        """Start watching; False when this process has no worker to watch or cannot watch
        it (not a job process, no pidfd support): logged, and the job runs as before."""
        if self._pid is None:
            return False
        self._loop = asyncio.get_running_loop()
        try:
            fd = os.pidfd_open(self._pid)
        except ProcessLookupError:
            self._loop.call_soon(self._lost)  # gone already
            return True
        except (OSError, AttributeError) as e:
            log.warning("worker_watch_unavailable", error=repr(e))
            return False
        self._fd = fd
        if not _is_ancestor(self._pid):
            self._loop.call_soon(self._lost)  # the PID is someone else's by now
            return True
        self._loop.add_reader(fd, self._lost)
        return True

    def _lost(self) -> None:
        if self._pid is None:
            return  # reported once
        pid, self._pid = self._pid, None
        self.stop()
        log.warning("worker_lost", worker_pid=pid)
        self._on_lost()

    def stop(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        os.close(fd)
