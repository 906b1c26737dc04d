"""The desk: what a room's transfer asks of the worker about human agents. The job process
asks; the worker's main process answers from the capacity store it already keeps (memory, or
Redis when CAPACITY_URL is set), and holds each winner's lease under the job, so a human's
seat comes back when the call ends or the job dies, like a persona's.

- `ringable`: the humans a transfer may ring now: the contact's assigned agents that are
  available with a free seat, else every available agent of the tenant with the skill and a
  free seat. Never a busy (by state or by capacity) or offline one.
- `claim`: the first to answer takes the call, atomically: one winner per call key, and the
  human's seat counted against their capacity. False: someone else won the call first, or
  this human's seats filled meanwhile (hang up that leg).
- `release`: the call with that human is over (hung up, room ended): their seat is free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from config.humans import HumanAgent


class HumanDesk(Protocol):
    async def ringable(
        self, tenant: str, *, assigned: Sequence[str], skill: str | None
    ) -> list[HumanAgent]: ...

    async def claim(self, call: str, human: HumanAgent) -> bool: ...

    async def release(self, call: str, human: HumanAgent) -> None: ...
