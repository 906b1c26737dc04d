"""The local selector: which personas join a room, given the campaign and the current load.

One `Selector` per worker process holds every persona's room count. `acquire` picks a persona
for a role with the campaign's strategy and returns a `Lease` (one reserved room); `cast`
reserves a whole scenario's cast, all-or-nothing on its required slots. One lock guards all
state, so the worker's asyncio loop and its executor threads can share the selector.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from config import roles
from config.catalog import Campaign, Catalog, Persona, Strategy
from config.scenario import CastSlot, Scenario

__all__ = [
    "INBOUND_STRATEGY",
    "Cast",
    "CastMember",
    "Lease",
    "NoCapacity",
    "Selector",
    "Strategy",
]

# Inbound calls spread over whoever is least busy, whatever the campaign says.
INBOUND_STRATEGY = Strategy.LEAST_LOADED

PINNED = "pinned by scenario"
LEGACY = "legacy persona"
TENANT_DEFAULT = "tenant default persona"
SYSTEM_DEFAULT = "system default persona"

_NOBODY: frozenset[str] = frozenset()
_MAX_EXPLAINED = 6  # personas named in a NoCapacity reason before "and N more"


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
class _Load:
    """One persona's mutable room count. `cap` is 0 for an inactive persona, so a single
    comparison (`rooms < cap`) decides availability on the hot path."""

    persona: Persona
    id: str
    cap: int
    rooms: int = 0

    def why_not(self, exclude: Collection[str]) -> str:
        """Why this persona cannot take a room (only called when it cannot)."""
        if not self.persona.active:
            return "inactive"
        if self.id in exclude:
            return "already in the room"
        return f"at capacity ({self.rooms}/{self.cap})"


@dataclass(slots=True, eq=False)
class _Pool:
    """Everything needed to fill one role in one campaign, precomputed from the catalog."""

    campaign_id: str
    role: str
    strategy: Strategy
    assigned: tuple[_Load, ...]  # assignment order: round_robin, least_loaded, random
    primaries: tuple[_Load, ...]
    backups: tuple[_Load, ...]
    fallbacks: tuple[tuple[_Load, str], ...]  # (persona, reason): legacy, tenant, system
    notes: tuple[str, ...]  # fallbacks skipped because they lack the role (for NoCapacity)
    cursor: int = 0  # round_robin: index in `assigned` to try next


@dataclass(slots=True, eq=False)
class Lease:
    """One reserved room of one persona. `release()` gives it back, once, from any thread."""

    persona: Persona
    reason: str
    campaign_id: str
    role: str
    _selector: Selector = field(repr=False)
    _load: _Load = field(repr=False)
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
        """Release every lease. Idempotent."""
        for member in self.members:
            member.lease.release()

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


Pick = tuple[_Load, str]


class Selector:
    """Chooses personas for rooms and keeps every persona's room count."""

    def __init__(self, catalog: Catalog, rng: random.Random | None = None) -> None:
        self.catalog = catalog
        self._rng = rng if rng is not None else random.Random()
        self._lock = threading.Lock()
        self._loads: dict[str, _Load] = {
            p.id: _Load(p, p.id, p.max_concurrent if p.active else 0) for p in catalog.personas
        }
        self._capacity = sum(load.cap for load in self._loads.values())
        self._in_use = 0
        known_roles = set(roles.ROLES) | {p.role for p in catalog.personas}
        self._pools: dict[str, dict[str, _Pool]] = {
            c.id: {role: self._build_pool(c, role) for role in known_roles}
            for c in catalog.campaigns
        }
        self._pickers: dict[str, Callable[[_Pool, Collection[str]], Pick | None]] = {
            Strategy.PRIMARY_FIRST: self._primary_first,
            Strategy.ROUND_ROBIN: self._round_robin,
            Strategy.LEAST_LOADED: self._least_loaded,
            Strategy.RANDOM: self._random,
        }

    # -- building ---------------------------------------------------------------------------

    def _build_pool(self, campaign: Campaign, role: str) -> _Pool:
        assigned = [
            (self._loads[a.persona], a.priority)
            for a in campaign.assignments
            if self._loads[a.persona].persona.role == role
        ]
        fallbacks: list[tuple[_Load, str]] = []
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
            load = self._loads[persona_id]
            if any_role or load.persona.role == role:
                fallbacks.append((load, reason))
            else:
                notes.append(f"{reason} {persona_id} is a {load.persona.role} persona")
        return _Pool(
            campaign_id=campaign.id,
            role=role,
            strategy=campaign.strategy,
            assigned=tuple(load for load, _ in assigned),
            primaries=tuple(load for load, prio in assigned if prio == "primary"),
            backups=tuple(load for load, prio in assigned if prio == "backup"),
            fallbacks=tuple(fallbacks),
            notes=tuple(notes),
        )

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

    def _primary_first(self, pool: _Pool, exclude: Collection[str]) -> Pick | None:
        for load in pool.primaries:
            if load.rooms < load.cap and load.id not in exclude:
                return load, "primary"
        for load in pool.backups:
            if load.rooms < load.cap and load.id not in exclude:
                return load, self._backup_reason(pool, exclude)
        return None

    @staticmethod
    def _backup_reason(pool: _Pool, exclude: Collection[str]) -> str:
        if not pool.primaries:
            return "backup"
        causes = [load.why_not(exclude) for load in pool.primaries]
        # Capacity is the usual story; say it whenever it is one of the causes.
        cause = next((c for c in causes if c.startswith("at capacity")), causes[0])
        return f"backup: primary {cause.split(' (')[0]}"

    def _round_robin(self, pool: _Pool, exclude: Collection[str]) -> Pick | None:
        assigned = pool.assigned
        n = len(assigned)
        start = pool.cursor
        for step in range(n):
            i = (start + step) % n
            load = assigned[i]
            if load.rooms < load.cap and load.id not in exclude:
                pool.cursor = (i + 1) % n
                return load, "round robin"
        return None

    def _least_loaded(self, pool: _Pool, exclude: Collection[str]) -> Pick | None:
        best: list[_Load] = []
        low = 0
        for load in pool.assigned:
            if load.rooms < load.cap and load.id not in exclude:
                if not best or load.rooms < low:
                    best = [load]
                    low = load.rooms
                elif load.rooms == low:
                    best.append(load)
        if not best:
            return None
        load = best[0] if len(best) == 1 else self._rng.choice(best)
        return load, f"least loaded ({low} of {load.cap})"

    def _random(self, pool: _Pool, exclude: Collection[str]) -> Pick | None:
        free = [load for load in pool.assigned if load.rooms < load.cap and load.id not in exclude]
        return (self._rng.choice(free), "random") if free else None

    # -- choosing (caller holds the lock) ---------------------------------------------------

    def _choose(
        self, campaign_id: str, role: str, strategy: str | None, exclude: Collection[str]
    ) -> Pick:
        pool = self._pool(campaign_id, role)
        picker = self._pickers[pool.strategy if strategy is None else strategy]
        pick = picker(pool, exclude)
        if pick is not None:
            return pick
        for load, reason in pool.fallbacks:
            if load.rooms < load.cap and load.id not in exclude:
                return load, reason
        raise NoCapacity(campaign_id, role, self._explain(pool, exclude))

    def _explain(self, pool: _Pool, exclude: Collection[str]) -> str:
        tried = [f"{load.id} {load.why_not(exclude)}" for load in pool.assigned]
        if len(tried) > _MAX_EXPLAINED:
            tried = [*tried[:_MAX_EXPLAINED], f"and {len(tried) - _MAX_EXPLAINED} more"]
        head = ", ".join(tried) if tried else f"no {pool.role} persona is assigned"
        tail = [f"{reason} {load.id} {load.why_not(exclude)}" for load, reason in pool.fallbacks]
        tail += pool.notes
        text = f"no free {pool.role} persona in campaign {pool.campaign_id!r}: {head}"
        return "; ".join([text, *tail])

    def _pinned(self, persona_id: str, role: str | None, campaign_id: str) -> _Load:
        load = self._loads.get(persona_id)
        if load is None:
            raise NoCapacity(campaign_id, role or "?", f"unknown persona {persona_id!r}")
        if load.rooms >= load.cap:
            raise NoCapacity(
                campaign_id,
                role or load.persona.role,
                f"persona {persona_id!r} is {load.why_not(_NOBODY)}",
            )
        return load

    def _take(self, load: _Load) -> None:
        load.rooms += 1
        self._in_use += 1

    def _give_back(self, load: _Load) -> None:
        load.rooms -= 1
        self._in_use -= 1

    def _check_strategy(self, strategy: str | None) -> None:
        if strategy is not None and strategy not in self._pickers:
            valid = ", ".join(s.value for s in Strategy)
            raise ValueError(f"unknown strategy {strategy!r} (valid: {valid})")

    # -- public API -------------------------------------------------------------------------

    def acquire(
        self,
        campaign_id: str,
        role: str,
        strategy: str | None = None,
        *,
        exclude: Collection[str] = _NOBODY,
    ) -> Lease:
        """Reserve a room of a persona for `role` in the campaign (strategy: the call's, else
        the campaign's), then the fallback chain. `exclude`: persona ids already in the room."""
        self._check_strategy(strategy)
        with self._lock:
            load, reason = self._choose(campaign_id, role, strategy, exclude)
            self._take(load)
        return Lease(load.persona, reason, campaign_id, role, self, load)

    def acquire_persona(
        self,
        persona_id: str,
        *,
        role: str | None = None,
        campaign_id: str = "",
        reason: str = PINNED,
    ) -> Lease:
        """Reserve a room of one named persona; NoCapacity if unknown, inactive or full."""
        with self._lock:
            load = self._pinned(persona_id, role, campaign_id)
            self._take(load)
        return Lease(load.persona, reason, campaign_id, role or load.persona.role, self, load)

    def cast(self, scenario: Scenario, strategy: str | None = None) -> Cast:
        """Reserve one persona per cast slot. All-or-nothing on required slots: if one cannot
        be filled, every lease taken is given back and NoCapacity names that role."""
        self._check_strategy(strategy)
        campaign_id = scenario.campaign
        slots = scenario.cast
        # Required slots before optional ones: an optional slot must never take the persona a
        # required one needed. Within each, pinned slots first: they are fixed, the others
        # must avoid them.
        order = sorted(
            range(len(slots)), key=lambda i: (not slots[i].required, slots[i].persona is None)
        )
        picks: dict[int, Pick] = {}
        missing: dict[int, str] = {}
        with self._lock:
            try:
                for i in order:
                    slot = slots[i]
                    in_room = frozenset(load.id for load, _ in picks.values())
                    try:
                        pick = self._pick_slot(slot, campaign_id, strategy, in_room)
                    except NoCapacity as exc:
                        if slot.required:
                            raise
                        missing[i] = exc.reason
                        continue
                    picks[i] = pick
                    self._take(pick[0])
            except BaseException:
                for load, _ in picks.values():
                    self._give_back(load)
                raise
        members = [
            CastMember(
                slots[i], Lease(load.persona, reason, campaign_id, slots[i].role, self, load)
            )
            for i, (load, reason) in sorted(picks.items())
        ]
        return Cast(scenario, members, [(slots[i].role, why) for i, why in sorted(missing.items())])

    def _pick_slot(
        self, slot: CastSlot, campaign_id: str, strategy: str | None, in_room: frozenset[str]
    ) -> Pick:
        if slot.persona is None:
            return self._choose(campaign_id, slot.role, strategy, in_room)
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
            self._give_back(lease._load)

    def active_rooms(self, persona_id: str) -> int:
        """Rooms `persona_id` holds now (KeyError for an unknown persona)."""
        return self._loads[persona_id].rooms

    def worker_load(self) -> float:
        """Share of the active personas' capacity in use, 0..1 (1 when there is none)."""
        with self._lock:
            in_use = self._in_use
        if self._capacity == 0:
            return 1.0
        return min(1.0, max(0.0, in_use / self._capacity))

    def stats(self) -> dict[str, Any]:
        """Per-persona load and totals, from one consistent snapshot."""
        with self._lock:
            snapshot = [(load.persona, load.rooms) for load in self._loads.values()]
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
