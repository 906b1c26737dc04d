"""The job's side of the desk: `desk_for_job(job_id, catalog)` is the `HumanDesk` a room's
transfer uses. In a worker's job process it asks the main process's desk service
(workers.humans.service) over its private Unix socket, so the claims race every room of the
worker (and, with CAPACITY_URL, every worker) and the winner's seat is held under the job.
Where no worker main process runs (workers.simulate, a test) it is a `LocalDesk` in this
process, over the store and states the settings name.

Whichever it is, a desk that cannot answer is nobody free: `ringable` answers [] and `claim`
False, logged (`human_desk_unavailable`), never raised into the transfer. `aclose()` when the
room ends (a LocalDesk gives its seats back; the service's are released by the job's end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Sequence
from typing import Any, Protocol

from config.catalog import Catalog
from config.humans import HumanAgent
from config.logging import get_logger
from workers.humans.desk import HumanDesk
from workers.humans.local import LocalDesk
from workers.humans.service import HUMAN_DESK_ENV, MAX_REQUEST

log = get_logger("workers.humans.client")

# The main process answers from memory at once, or from Redis within CAPACITY_TIMEOUT_S
# (0.25 s by default): this only guards against a main process that is stuck or gone.
ASK_TIMEOUT_S = 3.0


class JobDesk(HumanDesk, Protocol):
    async def aclose(self) -> None: ...


class DeskClient:
    """A `HumanDesk` answered by the worker's main process (see the module docstring)."""

    def __init__(
        self, path: str, job_id: str, catalog: Catalog, *, timeout_s: float = ASK_TIMEOUT_S
    ) -> None:
        self.path = path
        self.job_id = job_id
        self.catalog = catalog
        self.timeout_s = timeout_s

    async def _ask(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """The service's answer; None (logged) when it cannot be had or says it cannot."""
        writer = None
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_unix_connection(self.path, limit=MAX_REQUEST)
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                answer = json.loads(await reader.readline())
        except (OSError, TimeoutError, ValueError) as e:
            log.warning("human_desk_unavailable", ask=request["op"], error=repr(e))
            return None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        if not isinstance(answer, dict) or not answer.get("ok"):
            error = answer.get("message") if isinstance(answer, dict) else answer
            log.warning("human_desk_unavailable", ask=request["op"], error=str(error))
            return None
        return answer

    async def ringable(
        self, tenant: str, *, assigned: Sequence[str], skill: str | None
    ) -> list[HumanAgent]:
        answer = await self._ask(
            {"op": "ringable", "tenant": tenant, "assigned": list(assigned), "skill": skill}
        )
        if answer is None:
            return []
        by_id = self.catalog.human_by_id
        return [by_id[i] for i in answer.get("humans", ()) if i in by_id]

    async def claim(self, call: str, human: HumanAgent) -> bool:
        request = {"op": "claim", "job_id": self.job_id, "call": call, "human": human.id}
        try:
            answer = await self._ask(request)
        except asyncio.CancelledError:
            # the transfer gave up on this leg while the claim was on its way: a seat the
            # service may have taken meanwhile goes back at once
            await asyncio.shield(self.release(call, human))
            raise
        if answer is None:
            # a claim that may have gone through unanswered: give it back rather than hold a
            # seat nobody will use (the job's end would release it too)
            await self.release(call, human)
            return False
        return answer.get("won") is True

    async def release(self, call: str, human: HumanAgent) -> None:
        await self._ask({"op": "release", "job_id": self.job_id, "call": call, "human": human.id})

    async def aclose(self) -> None:
        return None  # the seats are the main process's, released when the job ends


def desk_for_job(job_id: str, catalog: Catalog, *, settings: Any = None) -> JobDesk:
    """The desk this job's transfers use: the worker main process's, when this process was
    started by one, else one in this process."""
    path = os.environ.get(HUMAN_DESK_ENV)
    if path:
        return DeskClient(path, job_id, catalog)
    return LocalDesk.open(catalog, settings=settings, job_id=job_id)
