"""The desk in this process (`HumanDesk`, workers/humans/desk.py): for tests and for rooms run
without a worker main process (workers.simulate). The same core as the worker's desk service;
it holds the winners' seats itself, so `aclose()` (or `release`) gives them back.

With a shared store (CAPACITY_URL) it keeps its leases alive with a LeaseRefresher of its own
while it holds any. A store that cannot answer is nobody free: `ringable` answers [] and
`claim` False, each logged (`human_desk_unavailable`), never raised into the transfer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from config.catalog import Catalog
from config.humans import HumanAgent
from config.logging import get_logger
from config.settings import get_settings
from workers.capacity.memory_store import MemoryStore
from workers.capacity.open_store import open_capacity_store
from workers.capacity.store import (
    DEFAULT_REFRESH_S,
    CapacityStore,
    CapacityStoreUnavailable,
    LeaseRefresher,
)
from workers.humans.availability import AvailabilityBook, open_availability
from workers.humans.claims import HumanClaims, HumanSeat
from workers.humans.core import DeskCore

log = get_logger("workers.humans.local")

LOCAL_JOB_ID = "local"


class LocalDesk:
    def __init__(
        self,
        core: DeskCore,
        *,
        job_id: str = LOCAL_JOB_ID,
        refresh_s: float = DEFAULT_REFRESH_S,
        owns: bool = False,
    ) -> None:
        self.core = core
        self.job_id = job_id
        self._refresh_s = refresh_s
        self._owns = owns  # whether aclose() closes the core's store and states
        self._seats: dict[tuple[str, str], HumanSeat] = {}
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls,
        catalog: Catalog,
        *,
        settings: Any = None,
        store: CapacityStore | None = None,
        states: AvailabilityBook | None = None,
        job_id: str = LOCAL_JOB_ID,
    ) -> LocalDesk:
        """A desk over the store and states the settings name (CAPACITY_URL: Redis, so its
        claims race every worker's; else this process's memory and HUMANS_STATE_PATH), or
        over the ones given."""
        settings = settings if settings is not None else get_settings()
        owns = store is None and states is None
        store = store if store is not None else open_capacity_store(settings)
        states = states if states is not None else open_availability(settings)
        lock = threading.Lock() if isinstance(store, MemoryStore) else None
        core = DeskCore(catalog, HumanClaims(store, lock=lock), states)
        return cls(core, job_id=job_id, refresh_s=settings.capacity_refresh_s, owns=owns)

    async def ringable(
        self, tenant: str, *, assigned: Sequence[str], skill: str | None
    ) -> list[HumanAgent]:
        try:
            return await asyncio.to_thread(
                self.core.ringable, tenant, assigned=assigned, skill=skill
            )
        except CapacityStoreUnavailable as e:
            log.warning("human_desk_unavailable", ask="ringable", error=str(e))
            return []

    async def claim(self, call: str, human: HumanAgent) -> bool:
        self._keep_alive()
        try:
            return await asyncio.to_thread(self._claim_and_keep, call, human)
        except CapacityStoreUnavailable as e:
            log.warning("human_desk_unavailable", ask="claim", human=human.id, error=str(e))
            return False

    def _claim_and_keep(self, call: str, human: HumanAgent) -> bool:
        """In one thread, so a claim cancelled meanwhile still leaves its seat in this desk
        (given back by `release` or `aclose`), never in nobody's hands."""
        seat = self.core.claim(self.job_id, call, human.id)
        if seat is None:
            return False
        self._seats[(call, human.id)] = seat
        return True

    async def release(self, call: str, human: HumanAgent) -> None:
        seat = self._seats.pop((call, human.id), None)
        if seat is not None:
            await asyncio.to_thread(seat.release)

    def held(self) -> list[HumanSeat]:
        return list(self._seats.values())

    def _keep_alive(self) -> None:
        """A shared store's leases expire unless refreshed: refresh while this desk runs."""
        store = self.core.claims.store
        if store.shared and self._refresher is None:
            self._refresher = asyncio.get_running_loop().create_task(
                LeaseRefresher(store, self._refresh_s).run()
            )

    async def aclose(self) -> None:
        """Every seat back, the refresher stopped, and a store this desk opened closed."""
        seats, self._seats = list(self._seats.values()), {}
        for seat in seats:
            await asyncio.to_thread(seat.release)
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._owns:
            self.core.claims.store.close()
            self.core.states.close()
