"""The capacity store's contract: what the selector needs from wherever the personas' room
counts and round-robin positions live, and the refresher that keeps a store's leases alive.

Both stores (`memory_store`, `redis_store`) offer the same primitive, **claim with check**:
"reserve these leases and move these round-robin positions, provided every persona still has a
free room, every position is still where I saw it (and, if I say which, every count I chose
from is still as I saw it)". Either all of it happens or none of it
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
    "CapacityStoreSettling",
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
# How often the refresher asks whether the store lost its data (Redis restarted empty), so that
# every worker puts its running rooms back within a second of Redis answering again.
DEFAULT_CHECK_S = 0.5
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


class CapacityStoreSettling(CapacityStoreUnavailable):
    """The store came back empty (Redis restarted without persistence) and waits `left_s`
    more for every worker to put back the leases of its running rooms before any new cast:
    casting now could give a persona a room its running rooms already use."""

    def __init__(self, message: str, left_s: float) -> None:
        super().__init__(message)
        self.left_s = left_s


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
    them) and were taken again, every one of them (their rooms still run); `over` names each
    persona those rooms now put over its limit, with (rooms, limit). Only a worker that could
    not refresh for longer than the lease TTL (paused, cut off) while others cast its
    personas' rooms gets there; no new room is cast onto such a persona until it is back
    under its limit."""

    refreshed: int
    restored: list[str] = field(default_factory=list)
    over: dict[str, tuple[int, int]] = field(default_factory=dict)


class CapacityStore(Protocol):
    """What the selector needs from a store. Every method is thread-safe."""

    name: str
    # Other processes change the counts: the selector reads a snapshot before it chooses.
    shared: bool

    def snapshot(self, persona_ids: Sequence[str], pool_keys: Sequence[str]) -> Snapshot: ...

    def claim(
        self,
        job_id: str,
        personas: Sequence[Claimant],
        moves: Sequence[Move],
        watch: Watch,
        seen: Sequence[int] | None = None,
    ) -> tuple[str, ...]:
        """One room of each persona and every round-robin move, all or nothing, provided each
        persona still has a free room and each position is still as seen: the lease ids, one
        per persona. ClaimRefused (with `watch`'s counts now) when that no longer holds.
        `seen`: the counts of `watch`'s personas the claimer chose from, if it chose without
        a fresh snapshot; the claim then also needs every one of them unchanged."""
        ...

    def release(self, leases: Sequence[tuple[str, str]]) -> None:
        """Give back (lease id, persona id) pairs. Idempotent."""
        ...

    def refresh(self) -> Refreshed: ...

    def needs_refresh(self) -> bool:
        """A cheap check, often: True when a refresh must not wait for its turn (the store
        lost its data, or a claim whose answer never came is to be given back)."""
        ...

    def held(self) -> Counter[str]:
        """This store's own live leases per persona (this worker's share)."""
        ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


# -- keeping leases alive ----------------------------------------------------------------------


class LeaseRefresher:
    """Refreshes a store's leases every `interval_s` while the worker runs: `await run()` in
    the worker's main process (each call runs in a thread, never on the event loop). Every
    `check_s` it asks the store whether a refresh cannot wait (Redis came back empty: this
    worker's running rooms are put back at once). `on_error` hears of a store that could not
    be reached (the next check tries again). A persona the refreshed leases put over its
    limit is logged once (`persona_over_capacity`) until it is back under it."""

    def __init__(
        self,
        store: CapacityStore,
        interval_s: float = DEFAULT_REFRESH_S,
        *,
        check_s: float = DEFAULT_CHECK_S,
        on_error: Callable[[CapacityStoreUnavailable], None] | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"LeaseRefresher interval_s must be above 0, not {interval_s}")
        self.store = store
        self.interval_s = interval_s
        self.check_s = min(check_s, interval_s)
        self._on_error = on_error
        self._over: dict[str, tuple[int, int]] = {}

    def refresh_once(self) -> Refreshed | None:
        """One refresh; None when the store could not be reached."""
        try:
            done = self.store.refresh()
        except CapacityStoreUnavailable as exc:
            self._failed(exc)
            return None
        if done.restored:
            log.info("capacity_leases_restored", leases=done.restored)
        for persona_id, (rooms, limit) in done.over.items():
            if self._over.get(persona_id, (0, 0))[0] < rooms:
                log.warning(
                    "persona_over_capacity",
                    persona=persona_id,
                    rooms=rooms,
                    limit=limit,
                    why="this worker's leases expired while it could not refresh them "
                    "(paused or cut off longer than CAPACITY_LEASE_TTL_S) and other workers "
                    "cast the persona meanwhile; no new room is cast onto it until it is "
                    "back under its limit",
                )
        self._over = dict(done.over)
        return done

    def _failed(self, exc: CapacityStoreUnavailable) -> None:
        if self._on_error is not None:
            self._on_error(exc)

    def due(self) -> bool:
        """Whether the store wants a refresh before its turn (False when it cannot say)."""
        try:
            return self.store.needs_refresh()
        except CapacityStoreUnavailable as exc:
            self._failed(exc)
            return False

    async def run(self) -> None:
        """Refresh until cancelled: every `interval_s`, and at once when the store asks."""
        loop = asyncio.get_running_loop()
        next_at = 0.0
        while True:
            if loop.time() >= next_at or await asyncio.to_thread(self.due):
                done = await asyncio.to_thread(self.refresh_once)
                # a refresh that failed is tried again at the next check, not a period later
                next_at = loop.time() + (self.interval_s if done is not None else 0.0)
            await asyncio.sleep(self.check_s)
