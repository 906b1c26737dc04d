"""The capacity store's contract: what the selector needs from wherever the personas' room
counts and round-robin positions live, and the refresher that keeps a store's leases alive.

Both stores (`memory_store`, `redis_store`) offer the same primitive, **claim with check**:
"reserve these leases and move these round-robin positions, provided every persona still has a
free room and every position is still where I saw it". Either all of it happens or none of it
does, and a refused claim comes back with fresh counts to choose again from. The selector's
rules (`workers.capacity.selector`) choose from counts; a store keeps them.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from config.logging import get_logger

__all__ = [
    "CapacityStore",
    "CapacityStoreUnavailable",
    "ClaimRefused",
    "Claimant",
    "LeaseRefresher",
    "Move",
    "Position",
    "Refreshed",
    "Snapshot",
    "Watch",
]

log = get_logger("workers.capacity.store")

DEFAULT_LEASE_TTL_S = 20.0
DEFAULT_REFRESH_S = 5.0
DEFAULT_TIMEOUT_S = 0.25
DEFAULT_RETRY_AFTER_S = 1.0
# One hash tag for every key: a Redis Cluster keeps them in one slot, so a script may use them all.
DEFAULT_PREFIX = "{capacity}"

# (persona ids, pool keys) whose fresh values a refused claim returns.
Watch = tuple[Sequence[str], Sequence[str]]


class Claimant(Protocol):
    """What a claim reads of each persona it asks a room of (the selector's record of it)."""

    @property
    def id(self) -> str: ...

    @property
    def cap(self) -> int: ...


class Position(Protocol):
    """A pool's round robin: where the store keeps it (`key`, "campaign/role") and the
    position the claimer saw (`cursor`)."""

    @property
    def key(self) -> str: ...

    @property
    def cursor(self) -> int: ...


# (pool, new position): one round-robin move a claim makes, if the position is still as seen.
Move = tuple[Position, int]


class CapacityStoreUnavailable(Exception):
    """The capacity store cannot answer now (Redis down, slow or refusing). Not NoCapacity: a
    persona may well be free, this worker just cannot know, so another worker may serve."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counts of live leases per persona and round-robin positions per pool, read at once."""

    counts: dict[str, int]
    cursors: dict[str, int] = field(default_factory=dict)


class ClaimRefused(Exception):
    """A claim lost a race (a persona filled up, or a round robin moved, since the claimer
    looked): nothing was claimed, and `snapshot` holds the watched counts and positions now."""

    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__(snapshot)
        self.snapshot = snapshot


@dataclass(frozen=True, slots=True)
class Refreshed:
    """What a refresh did with this worker's leases: `restored` had expired (or Redis lost
    them) and were taken again; `lost` had expired and their persona is now full."""

    refreshed: int
    restored: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


class CapacityStore(Protocol):
    """What the selector needs from a store. Every method is thread-safe."""

    name: str
    # Other processes change the counts: the selector reads a snapshot before it chooses.
    shared: bool

    def snapshot(self, persona_ids: Sequence[str], pool_keys: Sequence[str]) -> Snapshot: ...

    def claim(
        self, job_id: str, personas: Sequence[Claimant], moves: Sequence[Move], watch: Watch
    ) -> tuple[str, ...]:
        """One room of each persona and every round-robin move, all or nothing, provided each
        persona still has a free room and each position is still as seen: the lease ids, one
        per persona. ClaimRefused (with `watch`'s counts now) when that no longer holds."""
        ...

    def release(self, leases: Sequence[tuple[str, str]]) -> None:
        """Give back (lease id, persona id) pairs. Idempotent."""
        ...

    def refresh(self) -> Refreshed: ...

    def held(self) -> Counter[str]:
        """This store's own live leases per persona (this worker's share)."""
        ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


# -- keeping leases alive ----------------------------------------------------------------------


class LeaseRefresher:
    """Refreshes a store's leases every `interval_s` while the worker runs: `await run()` in
    the worker's main process (each refresh runs in a thread, never on the event loop).
    `on_lost` hears of leases that expired and could not be taken again; `on_error` of a
    store that could not be reached (the next round tries again)."""

    def __init__(
        self,
        store: CapacityStore,
        interval_s: float = DEFAULT_REFRESH_S,
        *,
        on_lost: Callable[[list[str]], None] | None = None,
        on_error: Callable[[CapacityStoreUnavailable], None] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"LeaseRefresher interval_s must be above 0, not {interval_s}")
        self.store = store
        self.interval_s = interval_s
        self._on_lost = on_lost
        self._on_error = on_error

    def refresh_once(self) -> Refreshed | None:
        """One refresh; None when the store could not be reached."""
        try:
            done = self.store.refresh()
        except CapacityStoreUnavailable as exc:
            if self._on_error is not None:
                self._on_error(exc)
            return None
        if done.restored:
            log.info("capacity_leases_restored", leases=done.restored)
        if done.lost:
            log.warning("capacity_leases_lost", leases=done.lost)
            if self._on_lost is not None:
                self._on_lost(done.lost)
        return done

    async def run(self) -> None:
        """Refresh until cancelled."""
        while True:
            await asyncio.to_thread(self.refresh_once)
            await asyncio.sleep(self.interval_s)
