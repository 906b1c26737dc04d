"""Ending a job's room from outside the room, by its rules.

Two things end a running room from outside: the job's stop signal (the drain timeout ran out,
the server terminated the job), as `shutdown`, and the worker's main process dying, as
`worker_lost`. Either may come while the job is still joining (no room yet: joining stops)
or before the floor exists (the floor ends as soon as it does).
"""

from __future__ import annotations

import asyncio
from typing import Any

from workers.room.floor import EndReason, Floor
from workers.room.stage import Stage


class RoomEnder:
    """Ends the job's room from outside, by its rules: the job's stop signal (`shutdown`),
    the worker's main process gone (`worker_lost`); also while the job is still joining."""

    def __init__(self, stage: Stage, joining: asyncio.Future[Any]) -> None:
        self._stage, self._joining = stage, joining
        self._floor: Floor | None = None
        self.stopped = False
        self._lost = False

    def seat(self, floor: Floor) -> None:
        """The room's floor exists (before its personas join)."""
        self._floor = floor
        if self._lost:
            self._end_lost()

    def stop_signalled(self, stop: asyncio.Future[Any]) -> None:
        """The job's stop signal resolved; cancelled, it says livekit tore the job down
        because its channel to the worker closed (or the worker stopped answering pings):
        the worker is lost, which the WorkerWatch may not have seen yet."""
        if stop.cancelled():
            self.worker_lost()
        else:
            self.stop()

    def stop(self) -> None:
        self.stopped = True
        self._stage.stop()
        self._joining.cancel()  # a no-op once joined

    def worker_lost(self) -> None:
        self._lost = True
        self._end_lost()
        self.stop()

    def _end_lost(self) -> None:
        if self._floor is not None:
            self._floor.request_end(EndReason.WORKER_LOST, "the worker's main process is gone")
