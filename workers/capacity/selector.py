"""The selector: which personas join a room, given the campaign and the current load.

A `Selector` chooses personas for rooms with the campaign's strategy and the fallback chain;
`acquire` returns a `Lease` (one reserved room), `cast` reserves a whole scenario's cast,
all-or-nothing on its required slots. Where the room counts and the round-robin positions
live is a capacity store (workers/capacity/store.py): in this process by default (one worker),
or in Redis, shared by every worker. The rules are one code path over both: the selector
chooses from the counts it knows, then asks the store to claim the choice atomically, with a
check that the counts (and the round-robin position) still allow it. With a shared store the
selector chooses from the counts it last read (a snapshot the first time, then every refused
claim and `sync_counts`) and sends them with the claim, which stands only if they are still
Redis's: the choice is then the one a fresh snapshot would give, in one round trip. A claim
that lost a race to another worker comes back with fresh counts and the selector chooses
again, a bounded number of times. One lock guards
the selector, so the worker's asyncio loop and its executor threads can share it.

Every (campaign, role) pool keeps indexes of its free personas, updated when a room count
changes, so a pick costs about the same with 5 personas or 1,000: free personas in assignment
order (round_robin, random), in priority order (primary_first), and grouped by room count
(least_loaded). They hold the same personas in the same order a full scan would find, so a
seeded rng makes the same choices as a scan would.
"""

from __future__ import annotations

import random
import threading
from bisect import bisect_left, insort
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from config import roles
from config.catalog import Campaign, Catalog, Persona, Strategy
from config.logging import get_logger
from config.scenario import CastSlot, Scenario
from workers.capacity.memory_store import MemoryStore
from workers.capacity.store import (
    CapacityStore,
    CapacityStoreUnavailable,
    ClaimRefused,
    Snapshot,
    Watch,
)

__all__ = [
    "INBOUND_STRATEGY",
    "CapacityStoreUnavailable",
    "Cast",
    "CastMember",
    "Lease",
    "NoCapacity",
    "Selector",
    "Strategy",
]

log = get_logger("workers.capacity.selector")

# Inbound calls spread over whoever is least busy, whatever the campaign says.
INBOUND_STRATEGY = Strategy.LEAST_LOADED

PINNED = "pinned by scenario"
LEGACY = "legacy persona"
TENANT_DEFAULT = "tenant default persona"
SYSTEM_DEFAULT = "system default persona"

_NOBODY: frozenset[str] = frozenset()
_BACKUP_AT_CAPACITY = "backup: primary at capacity"
_BACKUP_INACTIVE = "backup: primary inactive"
_BACKUP_IN_ROOM = "backup: primary already in the room"
_MAX_EXPLAINED = 6  # personas named in a NoCapacity reason before "and N more"
# Claims that lost a race to another worker before the selector gives up (NoCapacity, so
# LiveKit offers the room to someone else). Each retry chooses from the fresh counts the
# refused claim brought back: one round trip.
MAX_CLAIM_ATTEMPTS = 8
_ATTEMPTS = range(MAX_CLAIM_ATTEMPTS)
_NO_WATCH: Watch = ((), ())


class NoCapacity(Exception):
    """No persona can fill `role` now. `reason` says why, naming the personas considered."""

    def __init__(self, campaign_id: str, role: str, reason: str) -> None:
        # Keep all three in `args` so the exception pickles (job processes, executors).
        super().__init__(campaign_id, role, reason)
        self.campaign_id = campaign_id
        self.role = role
        self.reason = reason

    def __str__(self) -> str:
        return f"role {self.role!r}: {self.reason}"


@dataclass(slots=True, eq=False)
class _PersonaRooms:
    """One persona's room count as this selector knows it (the store's, for a shared store:
    as of the last snapshot) and its places in the pools' indexes. `cap` is 0 for an inactive
    persona, so a single comparison (`rooms < cap`) decides availability on the hot path."""

    persona: Persona
    id: str
    cap: int
    rooms: int = 0
    # Every place this persona holds in a pool (a persona may serve several campaigns):
    # the indexes to update when its room count changes.
    entries: list[_Entry] = field(default_factory=list)

    def why_not(self, exclude: Collection[str]) -> str:
        """Why this persona cannot take a room (only called when it cannot)."""
        if not self.persona.active:
            return "inactive"
        if self.id in exclude:
            return "already in the room"
        return f"at capacity ({self.rooms}/{self.cap})"


@dataclass(slots=True, eq=False)
class _Entry:
    """One assignment of a persona in a pool: its position in assignment order (`at`) and in
    priority order (`rank`: primaries first, then backups). `by_load` and `span` are the
    pool's, held here to save lookups on every room change."""

    pool: _Pool
    at: int
    rank: int
    primary: bool
    by_load: list[int]
    span: int


@dataclass(slots=True, eq=False)
class _Pool:
    """Everything needed to fill one role in one campaign, precomputed from the catalog.

    The indexes hold the free personas (rooms < cap) as sorted lists of integer keys, so a
    change is a C-level bisect plus a memmove, and `rng.choice` can draw a key directly (the
    same draw as from the list of personas a scan would build, in the same order)."""

    campaign_id: str
    role: str
    strategy: Strategy
    key: str  # "campaign/role": where the store keeps its round-robin position
    watch_ids: tuple[str, ...]  # every persona the pool may choose: a snapshot's ids
    assigned: tuple[_PersonaRooms, ...]  # assignment order: round_robin, least_loaded, random
    primaries: tuple[_PersonaRooms, ...]
    backups: tuple[_PersonaRooms, ...]
    fallbacks: tuple[tuple[_PersonaRooms, str], ...]  # (persona, reason): legacy, tenant, system
    notes: tuple[str, ...]  # fallbacks skipped because they lack the role (for NoCapacity)
    ranks: tuple[int, ...] = ()  # per assigned entry: its place in `by_rank`
    member_ids: frozenset[str] = frozenset()  # every assigned persona id
    primary_ids: dict[str, int] = field(default_factory=dict)  # id -> primary entries
    cursor: int = 0  # round_robin: index in `assigned` to try next (the store's, as last seen)
    # -- indexes of the free personas, kept by Selector._move --
    by_rank: tuple[_PersonaRooms, ...] = ()  # primaries then backups, in assignment order
    free: list[int] = field(default_factory=list)  # `at` keys: round_robin, random
    ranked: list[int] = field(default_factory=list)  # `rank` keys: primary_first
    # `rooms * span + at` keys: least_loaded's lowest room count first, its ties in
    # assignment order; one room more or less is one remove and one insert.
    by_load: list[int] = field(default_factory=list)
    span: int = 1  # len(assigned), at least 1
    full_primaries: int = 0  # active primary entries at capacity: the backup reason


@dataclass(slots=True, eq=False)
class Lease:
    """One reserved room of one persona. `release()` gives it back, once, from any thread.
    `id` is the store's lease id (on Redis: worker id, job id and a sequence number)."""

    persona: Persona
    reason: str
    campaign_id: str
    role: str
    _selector: Selector = field(repr=False)
    _rooms: _PersonaRooms = field(repr=False)
    id: str = ""
    _released: bool = field(default=False, repr=False)

    @property
    def released(self) -> bool:
        return self._released

    def release(self) -> None:
        """Give the room back. Idempotent: later calls do nothing."""
        self._selector._release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self._released else "held"
        return f"Lease({self.persona.id!r}, role={self.role!r}, reason={self.reason!r}, {state})"


@dataclass(eq=False)
class CastMember:
    """One filled cast slot: the slot from the scenario and the lease that fills it."""

    slot: CastSlot
    lease: Lease

    @property
    def persona(self) -> Persona:
        return self.lease.persona

    @property
    def reason(self) -> str:
        return self.lease.reason

    @property
    def role(self) -> str:
        return self.slot.role


@dataclass(eq=False)
class Cast:
    """The personas chosen for one room, one lease each, in scenario slot order."""

    scenario: Scenario
    members: list[CastMember]
    missing: list[tuple[str, str]] = field(default_factory=list)  # (role, why) optional slots

    @property
    def campaign_id(self) -> str:
        return self.scenario.campaign

    def member_for(self, role: str) -> CastMember | None:
        return next((m for m in self.members if m.slot.role == role), None)

    @property
    def opener(self) -> CastMember:
        member = self.member_for(self.scenario.opener_slot.role)
        assert member is not None, "the opener slot is required, so a cast always fills it"
        return member

    @property
    def lead(self) -> CastMember:
        """The `leads` slot's member; the opener when that slot is optional and empty."""
        return self.member_for(self.scenario.lead_slot.role) or self.opener

    def release(self) -> None:
        """Release every lease (one store call per selector). Idempotent."""
        by_selector: dict[int, list[Lease]] = {}
        for member in self.members:
            by_selector.setdefault(id(member.lease._selector), []).append(member.lease)
        for leases in by_selector.values():
            leases[0]._selector._release_many(leases)

    def __enter__(self) -> Cast:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "campaign": self.campaign_id,
            "members": [
                {
                    "role": m.slot.role,
                    "persona": m.persona.id,
                    "name": m.persona.name,
                    "reason": m.reason,
                    "required": m.slot.required,
                }
                for m in self.members
            ],
            "missing": [{"role": role, "reason": why} for role, why in self.missing],
        }


Pick = tuple[_PersonaRooms, str]


class Selector:
    """Chooses personas for rooms; `store` keeps every persona's room count (in memory when
    none is given). A store belongs to one selector."""

    def __init__(
        self,
        catalog: Catalog,
        rng: random.Random | None = None,
        *,
        store: CapacityStore | None = None,
    ) -> None:
        self.catalog = catalog
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self.store: CapacityStore = store if store is not None else MemoryStore()
        self._shared = self.store.shared
        # Round-robin moves of the choice being made (caller holds the lock): a claim makes
        # them in the store, and only a claim that went through makes them here. Always
        # emptied by the claim (or the failed choice) that follows.
        self._moves: list[tuple[_Pool, int]] = []
        # Personas whose count a shared store has told us (a snapshot, a refused claim).
        self._known: set[str] = set()
        self._personas: dict[str, _PersonaRooms] = {
            p.id: _PersonaRooms(p, p.id, p.max_concurrent if p.active else 0)
            for p in catalog.personas
        }
        self._capacity = sum(load.cap for load in self._personas.values())
        self._in_use = 0
        known_roles = set(roles.ROLES) | {p.role for p in catalog.personas}
        self._pools: dict[str, dict[str, _Pool]] = {
            c.id: {role: self._build_pool(c, role) for role in known_roles}
            for c in catalog.campaigns
        }
        self._by_key: dict[str, _Pool] = {}
        for by_role in self._pools.values():
            for pool in by_role.values():
                self._index_pool(pool)
                self._by_key[pool.key] = pool
        self._pickers: dict[str, Callable[[_Pool, Collection[str]], Pick | None]] = {
            Strategy.PRIMARY_FIRST: self._primary_first,
            Strategy.ROUND_ROBIN: self._round_robin,
            Strategy.LEAST_LOADED: self._least_loaded,
            Strategy.RANDOM: self._random,
        }

    # -- building ---------------------------------------------------------------------------

    def _build_pool(self, campaign: Campaign, role: str) -> _Pool:
        assigned = [
            (self._personas[a.persona], a.priority)
            for a in campaign.assignments
            if self._personas[a.persona].persona.role == role
        ]
        fallbacks: list[tuple[_PersonaRooms, str]] = []
        notes: list[str] = []
        chain = (
            (campaign.legacy_persona, LEGACY, False),
            (self.catalog.tenant_of(campaign.id).default_persona, TENANT_DEFAULT, False),
            (
                self.catalog.system_default_persona,
                SYSTEM_DEFAULT,
                self.catalog.system_default_serves_any_role,
            ),
        )
        for persona_id, reason, any_role in chain:
            if persona_id is None:
                continue
            load = self._personas[persona_id]
            if any_role or load.persona.role == role:
                fallbacks.append((load, reason))
            else:
                notes.append(f"{reason} {persona_id} is a {load.persona.role} persona")
        primaries = tuple(load for load, prio in assigned if prio == "primary")
        backups = tuple(load for load, prio in assigned if prio == "backup")
        primary_ids: dict[str, int] = {}
        for load in primaries:
            primary_ids[load.id] = primary_ids.get(load.id, 0) + 1
        # Each entry's place in priority order (primaries, then backups, each in assignment
        # order): primary_first's index.
        counters = {"primary": 0, "backup": len(primaries)}
        ranks: list[int] = []
        for _, prio in assigned:
            ranks.append(counters[prio])
            counters[prio] += 1
        members = [load.id for load, _ in assigned] + [load.id for load, _ in fallbacks]
        return _Pool(
            campaign_id=campaign.id,
            role=role,
            strategy=campaign.strategy,
            key=f"{campaign.id}/{role}",
            watch_ids=tuple(dict.fromkeys(members)),
            assigned=tuple(load for load, _ in assigned),
            primaries=primaries,
            backups=backups,
            fallbacks=tuple(fallbacks),
            notes=tuple(notes),
            ranks=tuple(ranks),
            member_ids=frozenset(load.id for load, _ in assigned),
            primary_ids=primary_ids,
            by_rank=primaries + backups,
            span=max(1, len(assigned)),
        )

    @staticmethod
    def _index_pool(pool: _Pool) -> None:
        """Register the pool with its personas (so their count changes reach it) and index
        the free ones. Only for the pools kept in `_pools`: a pool built on the fly is for a
        role no persona has, so it holds nobody to index."""
        for at, (load, rank) in enumerate(zip(pool.assigned, pool.ranks, strict=True)):
            entry = _Entry(pool, at, rank, rank < len(pool.primaries), pool.by_load, pool.span)
            load.entries.append(entry)  # twice for a persona listed twice, as a scan sees it
            if load.rooms < load.cap:
                insort(pool.free, at)
                insort(pool.ranked, rank)
                insort(pool.by_load, load.rooms * pool.span + at)
            elif entry.primary and load.cap:
                pool.full_primaries += 1

    def _pool(self, campaign_id: str, role: str) -> _Pool:
        by_role = self._pools.get(campaign_id)
        if by_role is None:
            raise NoCapacity(
                campaign_id,
                role,
                f"unknown campaign {campaign_id!r} (known: {', '.join(sorted(self._pools))})",
            )
        pool = by_role.get(role)
        if pool is None:
            # A role no persona has: only a system default that serves any role can fill it.
            pool = self._build_pool(self.catalog.campaign(campaign_id), role)
        return pool

    # -- strategies: each returns (persona, reason) or None when no assigned persona is free --
    # Each reads its pool's indexes of free personas; `exclude` (the few personas already in
    # the room) is checked only on the candidates an index offers, never over the whole pool.

    def _primary_first(self, pool: _Pool, exclude: Collection[str]) -> Pick | None:
        for rank in pool.ranked:  # free personas, primaries first, then backups
            load = pool.by_rank[rank]
            if load.id in exclude:
                continue
            if rank < len(pool.primaries):
                return load, "primary"
            return load, self._backup_reason(pool, exclude)
        return None

    def _backup_reason(self, pool: _Pool, exclude: Collection[str]) -> str:
        """Why no primary took the room (each is full, inactive or already in the room), from
        the pool's count of full primaries: no scan of the primaries, no formatting."""
        if not pool.primaries:
            return "backup"
        full = pool.full_primaries
        if full and exclude:  # a full primary already in the room counts as "in the room"
            ids = exclude if isinstance(exclude, (set, frozenset)) else set(exclude)
            for pid in ids:
                entries = pool.primary_ids.get(pid, 0)
                load = self._personas.get(pid)
                if entries and load is not None and 0 < load.cap <= load.rooms:
                    full -= entries
        # Capacity is the usual story; say it whenever it is one of the causes.
        if full > 0:
            return _BACKUP_AT_CAPACITY
        return _BACKUP_INACTIVE if not pool.primaries[0].persona.active else _BACKUP_IN_ROOM

    def _round_robin(self, pool: _Pool, exclude: Collection[str]) -> Pick | None:
        free, assigned = pool.free, pool.assigned
        n = len(free)
        start = bisect_left(free, pool.cursor)  # the first free persona at or after the cursor
        for step in range(n):
            at = free[(start + step) % n]
            load = assigned[at]
            if load.id not in exclude:
                self._moves.append((pool, (at + 1) % len(assigned)))
                return load, "round robin"
        return None

    def _least_loaded(self, pool: _Pool, exclude: Collection[str]) -> Pick | None:
        keys, span = pool.by_load, pool.span
        if not keys:
            return None
        excluded = self._excluded(pool, exclude) if exclude else None
        if not excluded:  # the usual case: the lowest room count's personas, as indexed
            low = keys[0] // span
            end = bisect_left(keys, (low + 1) * span)
            # choice(range(n)) draws exactly as choice() of those n personas would
            load = pool.assigned[keys[0 if end == 1 else self._rng.choice(range(end))] % span]
            return load, f"least loaded ({low} of {load.cap})"
        gone = sorted(bisect_left(keys, load.rooms * span + e.at) for e, load in excluded)
        start = 0
        while start < len(keys):  # one room count at a time, lowest first
            low = keys[start] // span
            end = bisect_left(keys, (low + 1) * span, start)
            skip = [i for i in gone if start <= i < end]
            count = end - start - len(skip)
            if count:
                nth = 0 if count == 1 else self._rng.choice(range(count))
                load = pool.assigned[keys[_nth_kept(start, nth, skip)] % span]
                return load, f"least loaded ({low} of {load.cap})"
            start = end
        return None

    def _random(self, pool: _Pool, exclude: Collection[str]) -> Pick | None:
        free = pool.free
        excluded = self._excluded(pool, exclude) if exclude else None
        if not excluded:  # the usual case: draw from the index as it is
            return (pool.assigned[self._rng.choice(free)], "random") if free else None
        gone = sorted(bisect_left(free, e.at) for e, _ in excluded)
        count = len(free) - len(gone)
        if not count:
            return None
        nth = self._rng.choice(range(count))  # draws as choice() of the `count` personas would
        return pool.assigned[free[_nth_kept(0, nth, gone)]], "random"

    def _excluded(
        self, pool: _Pool, exclude: Collection[str]
    ) -> list[tuple[_Entry, _PersonaRooms]]:
        """The pool's free entries of excluded personas. Usually none (a room's other
        personas have other roles): then a pick draws from its index as it is."""
        if not exclude or pool.member_ids.isdisjoint(exclude):
            return []
        out: list[tuple[_Entry, _PersonaRooms]] = []
        for pid in pool.member_ids.intersection(exclude):
            load = self._personas[pid]
            if load.rooms < load.cap:
                out.extend((entry, load) for entry in load.entries if entry.pool is pool)
        return out

    # -- choosing (caller holds the lock) ---------------------------------------------------

    def _choose(self, pool: _Pool, strategy: str | None, exclude: Collection[str]) -> Pick:
        picker = self._pickers[pool.strategy if strategy is None else strategy]
        return picker(pool, exclude) or self._fallback(pool, exclude)

    def _fallback(self, pool: _Pool, exclude: Collection[str]) -> Pick:
        """The campaign's legacy persona, the tenant's default, the system default."""
        for load, reason in pool.fallbacks:
            if load.rooms < load.cap and load.id not in exclude:
                return load, reason
        raise NoCapacity(pool.campaign_id, pool.role, self._explain(pool, exclude))

    def _explain(self, pool: _Pool, exclude: Collection[str]) -> str:
        tried = [f"{load.id} {load.why_not(exclude)}" for load in pool.assigned]
        if len(tried) > _MAX_EXPLAINED:
            tried = [*tried[:_MAX_EXPLAINED], f"and {len(tried) - _MAX_EXPLAINED} more"]
        head = ", ".join(tried) if tried else f"no {pool.role} persona is assigned"
        tail = [f"{reason} {load.id} {load.why_not(exclude)}" for load, reason in pool.fallbacks]
        tail += pool.notes
        text = f"no free {pool.role} persona in campaign {pool.campaign_id!r}: {head}"
        return "; ".join([text, *tail])

    def _pinned(self, persona_id: str, role: str | None, campaign_id: str) -> _PersonaRooms:
        load = self._personas.get(persona_id)
        if load is None:
            raise NoCapacity(campaign_id, role or "?", f"unknown persona {persona_id!r}")
        if load.rooms >= load.cap:
            raise NoCapacity(
                campaign_id,
                role or load.persona.role,
                f"persona {persona_id!r} is {load.why_not(_NOBODY)}",
            )
        return load

    def _take(self, load: _PersonaRooms) -> None:
        self._move(load, load.rooms + 1)
        self._in_use += 1

    def _give_back(self, load: _PersonaRooms) -> None:
        if load.rooms > 0:  # a shared store's snapshot may have counted it gone already
            self._move(load, load.rooms - 1)
            self._in_use -= 1

    @staticmethod
    def _move(load: _PersonaRooms, rooms: int) -> None:
        """Set a persona's room count and update the indexes of every pool it belongs to."""
        old, cap = load.rooms, load.cap
        load.rooms = rooms
        if old < cap and rooms < cap:
            # The usual case (inline: it runs twice per lease): free before and after, so
            # only its by-load key changes.
            for entry in load.entries:
                keys, span, at = entry.by_load, entry.span, entry.at
                del keys[bisect_left(keys, old * span + at)]
                insort(keys, rooms * span + at)
            return
        for entry in load.entries:
            pool, at, rank = entry.pool, entry.at, entry.rank
            if old < cap:  # now full: out of every index
                del pool.free[bisect_left(pool.free, at)]
                del pool.ranked[bisect_left(pool.ranked, rank)]
                del pool.by_load[bisect_left(pool.by_load, old * pool.span + at)]
                pool.full_primaries += entry.primary
            elif rooms < cap:  # free again
                insort(pool.free, at)
                insort(pool.ranked, rank)
                insort(pool.by_load, rooms * pool.span + at)
                pool.full_primaries -= entry.primary

    def _check_strategy(self, strategy: str | None) -> None:
        if strategy is not None and strategy not in self._pickers:
            valid = ", ".join(s.value for s in Strategy)
            raise ValueError(f"unknown strategy {strategy!r} (valid: {valid})")

    # -- the store: snapshot, claim with check, release (caller holds the lock) --------------

    def _apply(self, fresh: Snapshot) -> None:
        """Take a shared store's counts and round-robin positions as this selector's own."""
        self._known.update(fresh.counts)
        personas = self._personas
        for pid, rooms in fresh.counts.items():
            load = personas.get(pid)
            if load is not None and load.rooms != rooms:
                self._in_use += rooms - load.rooms
                self._move(load, rooms)
        for key, cursor in fresh.cursors.items():
            pool = self._by_key.get(key)
            if pool is not None:
                pool.cursor = cursor

    def _claim(
        self,
        loads: Sequence[_PersonaRooms],
        job_id: str,
        watch: Watch,
        cached: bool,
    ) -> tuple[tuple[str, ...] | None, Snapshot | None]:
        """Claim the chosen personas (and the round-robin moves made choosing them) in one
        atomic step: (lease ids, None), or (None, the store's fresh counts) on a lost race.
        `cached`: chosen from counts read earlier, not from a snapshot just taken."""
        moves = self._moves[:]
        self._moves.clear()
        seen = self._seen(watch) if cached else None
        try:
            ids = self.store.claim(job_id, loads, moves, watch, seen)
        except ClaimRefused as refused:
            return None, refused.snapshot
        for load in loads:
            self._take(load)
        for pool, cursor in moves:
            pool.cursor = cursor
        return ids, None

    def _snapshot(self, watch: Watch) -> Snapshot | None:
        """A shared store's counts before choosing, if this selector has not read every
        watched persona's count yet; else None: it chooses from the counts it has, and the
        claim (see `_seen`) is refused if they changed meanwhile."""
        if not self._shared or self._known.issuperset(watch[0]):
            return None
        return self.store.snapshot(*watch)

    def _seen(self, watch: Watch) -> list[int] | None:
        """The counts of the watched personas this selector chooses from, sent with a claim to
        a shared store: no snapshot before choosing (a cast is one round trip), yet a claim
        made from counts that changed meanwhile is refused with the fresh ones, as a lost
        race is. Only the first attempt sends them: a retry chooses from the counts its
        refusal just brought (a snapshot, as before), so contention costs one attempt and
        never more. None for a store only we write (or a persona the catalog lacks)."""
        if not self._shared:
            return None
        personas = self._personas
        try:
            return [personas[pid].rooms for pid in watch[0]]
        except KeyError:
            return None

    def _cast_watch(
        self, campaign_id: str, slots: Sequence[CastSlot]
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Every persona a cast may choose or pin, and the pools it draws from."""
        ids: dict[str, None] = {}
        keys: list[str] = []
        known = campaign_id in self._pools
        for slot in slots:
            if slot.persona is not None:
                ids[slot.persona] = None
            elif known:  # an unknown campaign's NoCapacity comes from choosing, as always
                pool = self._pool(campaign_id, slot.role)
                ids.update(dict.fromkeys(pool.watch_ids))
                keys.append(pool.key)
        return tuple(ids), tuple(keys)

    def _contended(self, campaign_id: str, role: str) -> NoCapacity:
        return NoCapacity(
            campaign_id,
            role,
            f"other workers took the personas chosen, {MAX_CLAIM_ATTEMPTS} times in a row "
            "(capacity store contended); offer the room again",
        )

    def _store_release(self, leases: list[tuple[str, str]]) -> None:
        try:
            self.store.release(leases)
        except CapacityStoreUnavailable as exc:
            self._release_failed([i for i, _ in leases], exc)

    @staticmethod
    def _release_failed(lease_ids: list[str], exc: CapacityStoreUnavailable) -> None:
        # Gone here; in the store the lease expires by itself, as nobody refreshes it now.
        log.warning("capacity_release_deferred", leases=lease_ids, error=str(exc))

    # -- public API -------------------------------------------------------------------------

    def acquire(
        self,
        campaign_id: str,
        role: str,
        strategy: str | None = None,
        *,
        exclude: Collection[str] = _NOBODY,
        job_id: str = "",
    ) -> Lease:
        """Reserve a room of a persona for `role` in the campaign (strategy: the call's, else
        the campaign's), then the fallback chain. `exclude`: persona ids already in the room.
        `job_id` goes into the lease id. Raises NoCapacity, or CapacityStoreUnavailable."""
        if strategy is not None and strategy not in self._pickers:
            self._check_strategy(strategy)
        store, moves = self.store, self._moves
        with self._lock:
            by_role = self._pools.get(campaign_id)  # _pool, inline for the usual case
            pool = by_role.get(role) if by_role is not None else None
            if pool is None:
                pool = self._pool(campaign_id, role)
            picker = self._pickers[pool.strategy if strategy is None else strategy]
            watch: Watch
            # With a shared store the claim checks the counts we chose from: no snapshot first
            # once we know them
            watch = (pool.watch_ids, (pool.key,)) if self._shared else _NO_WATCH
            fresh = self._snapshot(watch)
            # _choose and _claim, inline: the hot path (a couple of microseconds in memory)
            for _ in _ATTEMPTS:
                seen = self._seen(watch) if fresh is None else None
                if fresh is not None:
                    self._apply(fresh)
                try:
                    load, reason = picker(pool, exclude) or self._fallback(pool, exclude)
                except NoCapacity:
                    if seen is None:
                        raise
                    moves.clear()  # full by the counts we had: read them before saying so
                    fresh = store.snapshot(*watch)
                    continue
                try:
                    (lease_id,) = store.claim(job_id, (load,), moves, watch, seen)
                except ClaimRefused as refused:
                    fresh = refused.snapshot
                    moves.clear()
                    continue
                if moves:  # round robin: one pool, one move
                    moved, cursor = moves.pop()
                    moved.cursor = cursor
                self._move(load, load.rooms + 1)
                self._in_use += 1
                return Lease(load.persona, reason, campaign_id, role, self, load, lease_id)
        raise self._contended(campaign_id, role)

    def acquire_persona(
        self,
        persona_id: str,
        *,
        role: str | None = None,
        campaign_id: str = "",
        reason: str = PINNED,
        job_id: str = "",
    ) -> Lease:
        """Reserve a room of one named persona; NoCapacity if unknown, inactive or full."""
        with self._lock:
            watch = ((persona_id,), ()) if self._shared else _NO_WATCH
            fresh = self._snapshot(watch) if persona_id in self._personas else None
            for _ in _ATTEMPTS:
                cached = self._shared and fresh is None and persona_id in self._personas
                if fresh is not None:
                    self._apply(fresh)
                try:
                    load = self._pinned(persona_id, role, campaign_id)
                except NoCapacity:
                    if not cached:
                        raise
                    fresh = self.store.snapshot(*watch)  # full by the counts we had
                    continue
                ids, fresh = self._claim((load,), job_id, watch, cached)
                if ids is not None:
                    persona_role = role or load.persona.role
                    return Lease(
                        load.persona, reason, campaign_id, persona_role, self, load, ids[0]
                    )
        raise self._contended(campaign_id, role or "?")

    def cast(self, scenario: Scenario, strategy: str | None = None, *, job_id: str = "") -> Cast:
        """Reserve one persona per cast slot, in one atomic claim. All-or-nothing on required
        slots: if one cannot be filled, nothing is reserved and NoCapacity names that role."""
        self._check_strategy(strategy)
        campaign_id = scenario.campaign
        slots = scenario.cast
        # Required slots before optional ones: an optional slot must never take the persona a
        # required one needed. Within each, pinned slots first: they are fixed, the others
        # must avoid them.
        order = sorted(
            range(len(slots)), key=lambda i: (not slots[i].required, slots[i].persona is None)
        )
        with self._lock:
            watch = self._cast_watch(campaign_id, slots) if self._shared else _NO_WATCH
            fresh = self._snapshot(watch)
            for _ in _ATTEMPTS:
                cached = self._shared and fresh is None
                if fresh is not None:
                    self._apply(fresh)
                try:
                    picks, missing = self._choose_cast(slots, order, campaign_id, strategy)
                except NoCapacity:
                    self._moves.clear()  # a round-robin slot chosen before the one that failed
                    if not cached:
                        raise
                    fresh = self.store.snapshot(*watch)  # full by the counts we had
                    continue
                except BaseException:
                    self._moves.clear()
                    raise
                chosen = sorted(picks.items())
                loads = [load for _, (load, _) in chosen]
                ids, fresh = self._claim(loads, job_id, watch, cached)
                if ids is not None:
                    break
            else:
                raise self._contended(campaign_id, "+".join(s.role for s in slots if s.required))
        members = [
            CastMember(
                slots[i],
                Lease(load.persona, reason, campaign_id, slots[i].role, self, load, lease_id),
            )
            for (i, (load, reason)), lease_id in zip(chosen, ids, strict=True)
        ]
        return Cast(scenario, members, [(slots[i].role, why) for i, why in sorted(missing.items())])

    def _choose_cast(
        self, slots: Sequence[CastSlot], order: list[int], campaign_id: str, strategy: str | None
    ) -> tuple[dict[int, Pick], dict[int, str]]:
        """Choose every slot from the counts as they are; nothing is reserved yet."""
        picks: dict[int, Pick] = {}
        missing: dict[int, str] = {}
        for i in order:
            slot = slots[i]
            in_room = frozenset(load.id for load, _ in picks.values())
            try:
                picks[i] = self._pick_slot(slot, campaign_id, strategy, in_room)
            except NoCapacity as exc:
                if slot.required:
                    raise
                missing[i] = exc.reason
        return picks, missing

    def _pick_slot(
        self, slot: CastSlot, campaign_id: str, strategy: str | None, in_room: frozenset[str]
    ) -> Pick:
        if slot.persona is None:
            return self._choose(self._pool(campaign_id, slot.role), strategy, in_room)
        if slot.persona in in_room:
            raise NoCapacity(
                campaign_id, slot.role, f"persona {slot.persona!r} already fills another slot"
            )
        return self._pinned(slot.persona, slot.role, campaign_id), PINNED

    def _release(self, lease: Lease) -> None:
        with self._lock:
            if lease._released:
                return
            lease._released = True
            load = lease._rooms
            rooms = load.rooms
            if rooms > 0:  # _give_back, inline (the hot path)
                self._move(load, rooms - 1)
                self._in_use -= 1
            try:
                self.store.release(((lease.id, load.id),))
            except CapacityStoreUnavailable as exc:
                self._release_failed([lease.id], exc)

    def _release_many(self, leases: list[Lease]) -> None:
        with self._lock:
            held = [lease for lease in leases if not lease._released]
            for lease in held:
                lease._released = True
                self._give_back(lease._rooms)
            if held:
                self._store_release([(lease.id, lease.persona.id) for lease in held])

    def sync_counts(self) -> None:
        """Read every persona's count and every round-robin position from a shared store
        (what `worker_load` reports until the next choice); nothing to do in memory.
        Raises CapacityStoreUnavailable."""
        if not self._shared:
            return
        with self._lock:
            fresh = self.store.snapshot(list(self._personas), list(self._by_key))
            self._apply(fresh)

    def active_rooms(self, persona_id: str) -> int:
        """Rooms `persona_id` holds now, in every worker sharing the store (KeyError for an
        unknown persona; CapacityStoreUnavailable when a shared store cannot answer)."""
        load = self._personas[persona_id]
        if self._shared:
            with self._lock:
                self._apply(self.store.snapshot((persona_id,), ()))
        return load.rooms

    def own_rooms(self) -> dict[str, int]:
        """This worker's leases per persona (its share of a shared store's counts)."""
        held = self.store.held()
        return {pid: held[pid] for pid in self._personas if held[pid]}

    def worker_load(self) -> float:
        """Share of the active personas' capacity in use, 0..1 (1 when there is none). With a
        shared store: every worker's rooms, as of the last snapshot (see `sync_counts`)."""
        with self._lock:
            in_use = self._in_use
        if self._capacity == 0:
            return 1.0
        return min(1.0, max(0.0, in_use / self._capacity))

    def stats(self) -> dict[str, Any]:
        """Per-persona load and totals, from one consistent snapshot (every worker's, with a
        shared store: CapacityStoreUnavailable when it cannot answer)."""
        with self._lock:
            if self._shared:
                self._apply(self.store.snapshot(list(self._personas), ()))
            snapshot = [(load.persona, load.rooms) for load in self._personas.values()]
        personas = [_persona_stats(p, rooms) for p, rooms in snapshot]
        return {
            "personas": personas,
            "summary": {
                "personas": len(personas),
                "personas_with_active_rooms": sum(1 for s in personas if s["active"] > 0),
                "available_personas": sum(1 for s in personas if s["available"]),
                "total_active_rooms": sum(s["active"] for s in personas),
            },
        }

    @property
    def store_lock(self) -> threading.Lock:
        """Held around every call to the store. A MemoryStore is not thread-safe on its own:
        whoever else keeps leases in this selector's store (the human desk's claims, which are
        not personas' and never in this selector's counts) takes this lock around its calls."""
        return self._lock

    def close(self) -> None:
        """Close the store's connections (a shared store's leases expire unless released)."""
        self.store.close()


def _persona_stats(persona: Persona, rooms: int) -> dict[str, Any]:
    limit = persona.max_concurrent
    return {
        "id": persona.id,
        "name": persona.name,
        "role": persona.role,
        "max": limit,
        "active": rooms,
        "available": persona.active and rooms < limit,
        # Integer half-up rounding: 2/3 -> 67, 1/8 -> 13 (round() would give 12).
        "load_percentage": (200 * rooms + limit) // (2 * limit),
    }


def _nth_kept(start: int, nth: int, skip: list[int]) -> int:
    """The index of the `nth` item from `start` on, not counting the (sorted) `skip` ones."""
    i = start + nth
    for gone in skip:
        if gone <= i:
            i += 1
    return i
