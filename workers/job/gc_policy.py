"""How a job process keeps garbage collection pauses short.

A job process runs one room and then exits. A full (generation 2) collection stalls the
event loop, every persona of the room with it, for as long as it walks the tracked objects,
and livekit keeps a room's session events and chat items alive for its session report: ~40k
objects by turn 500, a 17-30 ms pause. After each turn the young generations are collected
and what is still alive is frozen (moved out of the collector's reach), so a full collection
walks only what the current turn allocated. Objects freed by reference counting are freed as
always; only cyclic garbage among the frozen ones stays until the process exits, a bounded
cost for one room (livekit builds a dataclass type per reply: ~1 KB a turn).

Not for a process that runs many rooms (the simulation, tests, livekit's thread executor
behind `console`): it would keep their cyclic garbage for good; `room_listeners` leaves it
out there.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Callable
from typing import Any


def freeze_after_each_turn(event: dict[str, Any]) -> None:
    """A transcript listener (workers.room.runner.run_room's `listeners`) for job processes."""
    if event.get("event") == "utterance":
        gc.collect(1)  # the young generations: what the turn made and dropped goes first
        gc.freeze()


def room_listeners() -> list[Callable[[dict[str, Any]], None]]:
    """The GC policy for a job's room: the per-turn freeze in a job process livekit started
    (a multiprocessing child: one room, then it exits); nothing in a process rooms share."""
    return [freeze_after_each_turn] if multiprocessing.parent_process() is not None else []
