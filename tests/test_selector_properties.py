"""Selector invariants under random catalogs and operations (on each capacity store), and under
many threads: capacity is never exceeded, stats agree with the leases held, and everything
returns to zero. Many worker processes on one Redis: tests/test_capacity_store_processes.py."""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.catalog import Catalog
from config.scenario import Scenario
from tests.redis_server import MakeSelector
from tests.test_selector import campaign, make_catalog, persona, scenario
from workers.capacity.selector import Cast, Lease, NoCapacity, Selector, Strategy

pytestmark = pytest.mark.integration  # thousands of random operations, and threads

ROLES = ("dispatcher", "driver", "sales")
STRATEGIES = [None, *Strategy]
FALLBACK_REASONS = ("legacy persona", "tenant default persona", "system default persona")


# -- random catalogs -------------------------------------------------------------------------


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    n = draw(st.integers(1, 6))
    ids = [f"p{i}" for i in range(n)]
    personas = [
        persona(
            pid,
            draw(st.sampled_from(ROLES)),
            cap=draw(st.integers(1, 3)),
            active=draw(st.sampled_from([True, True, True, False])),
        )
        for pid in ids
    ]
    maybe_id = st.none() | st.sampled_from(ids)
    campaigns = []
    for c in range(draw(st.integers(1, 3))):
        assigned = draw(st.lists(st.sampled_from(ids), unique=True, max_size=n))
        prios = [draw(st.sampled_from(["primary", "backup"])) for _ in assigned]
        legacy = draw(maybe_id) or (None if assigned else ids[0])
        strategy = draw(st.sampled_from(list(Strategy)))
        campaigns.append(
            campaign(f"c{c}", list(zip(assigned, prios, strict=True)), strategy, legacy)
        )
    return make_catalog(
        personas,
        campaigns,
        tenant_default=draw(maybe_id),
        system_default=draw(maybe_id),
        any_role=draw(st.booleans()),
    )


# -- an independent model of what the selector must hold -------------------------------------


@dataclass
class Model:
    catalog: Catalog
    sel: Selector
    leases: list[Lease] = field(default_factory=list)
    casts: list[Cast] = field(default_factory=list)

    def rooms(self) -> Counter[str]:
        return Counter(lease.persona.id for lease in self.leases if not lease.released)

    def free(self, pid: str, exclude: frozenset[str] = frozenset()) -> bool:
        p = self.catalog.persona(pid)
        return p.active and self.rooms()[pid] < p.max_concurrent and pid not in exclude

    def chain(self, cid: str, role: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(assigned (id, priority) of the role, fallbacks (id, reason) that may serve it)."""
        cat = self.catalog
        camp = cat.campaign(cid)
        assigned: list[tuple[str, str]] = [
            (a.persona, a.priority) for a in camp.assignments if cat.persona(a.persona).role == role
        ]
        steps = (
            (camp.legacy_persona, False),
            (cat.tenant_of(cid).default_persona, False),
            (cat.system_default_persona, cat.system_default_serves_any_role),
        )
        fallbacks = [
            (pid, reason)
            for (pid, any_role), reason in zip(steps, FALLBACK_REASONS, strict=True)
            if pid and (any_role or cat.persona(pid).role == role)
        ]
        return assigned, fallbacks

    def check(self) -> None:
        """Every persona's count equals the leases held, within capacity; stats agree."""
        rooms = self.rooms()
        stats = self.sel.stats()
        for row in stats["personas"]:
            p = self.catalog.persona(row["id"])
            assert row["active"] == rooms[p.id] == self.sel.active_rooms(p.id)
            assert 0 <= row["active"] <= p.max_concurrent
            assert p.active or row["active"] == 0
            assert row["max"] == p.max_concurrent
            assert row["available"] == (p.active and row["active"] < p.max_concurrent)
            assert row["load_percentage"] == int(100 * row["active"] / p.max_concurrent + 0.5)
        summary = stats["summary"]
        assert summary == {
            "personas": len(self.catalog.personas),
            "personas_with_active_rooms": len(+rooms),
            "available_personas": sum(row["available"] for row in stats["personas"]),
            "total_active_rooms": sum(rooms.values()),
        }
        capacity = sum(p.max_concurrent for p in self.catalog.personas if p.active)
        expected = min(1.0, summary["total_active_rooms"] / capacity) if capacity else 1.0
        assert self.sel.worker_load() == pytest.approx(expected)

    # -- operations, each checking its own outcome against the model --

    def acquire(self, cid: str, role: str, strategy: Strategy | None, exclude: frozenset[str]):
        assigned, fallbacks = self.chain(cid, role)
        free_assigned = [pid for pid, _ in assigned if self.free(pid, exclude)]
        free_fallback = [(pid, why) for pid, why in fallbacks if self.free(pid, exclude)]
        before = self.rooms()
        try:
            lease = self.sel.acquire(cid, role, strategy, exclude=exclude)
        except NoCapacity as exc:
            assert not free_assigned and not free_fallback, "refused while a persona was free"
            assert (exc.campaign_id, exc.role) == (cid, role)
            return
        self.leases.append(lease)
        pid = lease.persona.id
        assert (lease.campaign_id, lease.role) == (cid, role)
        if not free_assigned:
            assert (pid, lease.reason) == free_fallback[0], "fallbacks in chain order"
            return
        assert pid in free_assigned, "an assigned persona was free, so no fallback"
        used = strategy or self.catalog.campaign(cid).strategy
        if used == Strategy.PRIMARY_FIRST:
            order = [p for p, prio in assigned if prio == "primary"]
            order += [p for p, prio in assigned if prio == "backup"]
            assert pid == next(p for p in order if p in free_assigned)
        elif used == Strategy.LEAST_LOADED:
            assert before[pid] == min(before[p] for p in free_assigned)

    def cast(self, s: Scenario, strategy: Strategy | None) -> None:
        before = self.rooms()
        try:
            cast = self.sel.cast(s, strategy)
        except NoCapacity as exc:
            assert exc.role in {slot.role for slot in s.cast if slot.required}
            total = self.sel.stats()["summary"]["total_active_rooms"]
            assert total == sum(before.values()), "a failed cast keeps no lease"
            return
        self.casts.append(cast)
        self.leases += [m.lease for m in cast.members]
        chosen = [m.persona.id for m in cast.members]
        assert len(set(chosen)) == len(chosen), "one persona, one slot"
        filled = [m.slot for m in cast.members]
        assert filled == [slot for slot in s.cast if slot in filled], "scenario order"
        assert {slot.role for slot in s.cast if slot.required} <= {x.role for x in filled}
        assert [r for r, _ in cast.missing] == [x.role for x in s.cast if x not in filled]
        for m in cast.members:
            if m.slot.persona is not None:
                assert m.persona.id == m.slot.persona
            elif m.persona.role != m.slot.role:
                assert m.persona.id == self.catalog.system_default_persona
                assert self.catalog.system_default_serves_any_role

    def release_all(self) -> None:
        for cast in self.casts:
            cast.release()
        for lease in self.leases:
            lease.release()


def scenarios(cat: Catalog) -> st.SearchStrategy[Scenario]:
    def build(campaign_id: str, roles: list[str], flags: list[bool], pins: list[int]) -> Scenario:
        slots = []
        for i, role in enumerate(roles):
            slot = {"role": role, "required": i == 0 or flags[i]}
            of_role = [p.id for p in cat.personas if p.role == role]
            if pins[i] and of_role:
                slot["persona"] = of_role[pins[i] % len(of_role)]
            slots.append(slot)
        return scenario(campaign_id, *slots)

    return st.builds(
        build,
        st.sampled_from([c.id for c in cat.campaigns]),
        st.lists(st.sampled_from(ROLES), min_size=1, max_size=3, unique=True),
        st.lists(st.booleans(), min_size=3, max_size=3),
        st.lists(st.sampled_from([0, 0, 0, 1, 2]), min_size=3, max_size=3),
    )


# make_selector gives every selector a fresh key space, so examples sharing the fixture (and
# its Redis) start from nothing, as they do in memory.
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(cat=catalogs(), data=st.data())
def test_random_operations_keep_every_invariant(
    cat: Catalog, data: st.DataObject, make_selector: MakeSelector
):
    model = Model(cat, make_selector(cat, random.Random(data.draw(st.integers(0, 9)))))
    ids = [p.id for p in cat.personas]
    campaign_ids = [c.id for c in cat.campaigns]
    for _ in range(data.draw(st.integers(1, 40), label="ops")):
        op = data.draw(st.sampled_from(["acquire", "acquire", "pin", "cast", "release", "drop"]))
        if op == "acquire":
            model.acquire(
                data.draw(st.sampled_from(campaign_ids)),
                data.draw(st.sampled_from(ROLES)),
                data.draw(st.sampled_from(STRATEGIES)),
                frozenset(data.draw(st.lists(st.sampled_from(ids), max_size=2))),
            )
        elif op == "pin":
            pid = data.draw(st.sampled_from(ids))
            free = model.free(pid)
            try:
                model.leases.append(model.sel.acquire_persona(pid))
                assert free
            except NoCapacity:
                assert not free
        elif op == "cast":
            model.cast(data.draw(scenarios(cat)), data.draw(st.sampled_from(STRATEGIES)))
        elif op == "release" and model.leases:
            lease = data.draw(st.sampled_from(model.leases))
            lease.release()  # may already be released: must be a no-op then
            assert lease.released
        elif op == "drop" and model.casts:
            data.draw(st.sampled_from(model.casts)).release()
        model.check()
    model.release_all()
    model.check()
    assert model.sel.stats()["summary"]["total_active_rooms"] == 0
    assert model.sel.worker_load() == 0.0 or not any(p.active for p in cat.personas)


# -- threads ---------------------------------------------------------------------------------

THREADS, OPS = 8, 2_000


def stress_catalog() -> Catalog:
    """Tight capacity so threads collide at the limit all the time."""
    personas = [persona(f"d{i}", "dispatcher", cap=1 + i % 2) for i in range(3)]
    personas += [persona(f"r{i}", "driver", cap=1 + i % 2) for i in range(3)]
    personas += [persona("x", "sales", cap=2), persona("off", "driver", active=False)]
    every = [(p["id"], "primary" if i % 3 == 0 else "backup") for i, p in enumerate(personas)]
    return make_catalog(
        personas,
        [
            campaign("c0", every, "primary_first"),
            campaign("c1", every[::-1], "round_robin", legacy="d0"),
            campaign("c2", every[2:], "least_loaded"),
            campaign("c3", every[:5], "random"),
        ],
        tenant_default="r1",
        system_default="x",
        any_role=True,
    )


@contextmanager
def fast_switching() -> Iterator[None]:
    """Make the interpreter switch threads very often, so races show up if there are any."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@contextmanager
def watching(sel: Selector, cat: Catalog) -> Iterator[list[str]]:
    """A thread that reads stats while others work and records any broken invariant."""
    caps = {p.id: p.max_concurrent for p in cat.personas}
    problems: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            stats = sel.stats()
            rows = stats["personas"]
            over = [r for r in rows if not 0 <= r["active"] <= caps[r["id"]]]
            problems.extend(f"{r['id']} holds {r['active']} rooms" for r in over)
            if stats["summary"]["total_active_rooms"] != sum(r["active"] for r in rows):
                problems.append(f"summary {stats['summary']}")
            if not 0.0 <= sel.worker_load() <= 1.0:
                problems.append(f"worker_load {sel.worker_load()}")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield problems
    finally:
        stop.set()
        watcher.join()


def run_threads(target: Callable[[int], object], n: int) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("seed", range(3))  # thread timing varies: three runs, three chances
def test_threads_never_overbook_and_release_everything(seed: int):
    cat = stress_catalog()
    sel = Selector(cat, rng=random.Random(seed))
    caps = {p.id: p.max_concurrent for p in cat.personas}
    casts = [
        scenario("c0", {"role": "dispatcher"}, {"role": "driver"}),
        scenario("c1", {"role": "driver"}, {"role": "sales", "required": False}),
    ]
    tally: Counter[str] = Counter()
    tally_lock = threading.Lock()

    def work(i: int) -> None:
        rng = random.Random(seed * THREADS + i)
        held: list[Lease | Cast] = []
        mine: Counter[str] = Counter()
        for _ in range(OPS):
            roll = rng.random()
            try:
                if roll < 0.4:
                    lease = sel.acquire(rng.choice(["c0", "c1", "c2", "c3"]), rng.choice(ROLES))
                    assert sel.active_rooms(lease.persona.id) <= caps[lease.persona.id]
                    held.append(lease)
                elif roll < 0.55:
                    held.append(sel.cast(rng.choice(casts)))
                elif held:
                    held.pop(rng.randrange(len(held))).release()
                mine["ok"] += 1
            except NoCapacity:
                mine["refused"] += 1
        for item in held:
            item.release()
        with tally_lock:
            tally.update(mine)

    with fast_switching(), watching(sel, cat) as problems:
        run_threads(work, THREADS)
    assert not problems, problems[:5]
    assert tally["ok"] + tally["refused"] == THREADS * OPS
    assert tally["refused"] > 0, "the test must reach capacity to mean anything"
    assert sel.stats()["summary"]["total_active_rooms"] == 0
    assert all(sel.active_rooms(pid) == 0 for pid in caps)
    assert sel.worker_load() == 0.0


def test_racing_releases_of_the_same_leases_free_each_room_once():
    """Four threads release the same leases at once: each room is freed exactly once."""
    cat = stress_catalog()
    sel = Selector(cat)
    caps = {p.id: p.max_concurrent for p in cat.personas}
    for _ in range(10):
        leases = [
            sel.acquire_persona(pid) for pid in caps if pid != "off" for _ in range(caps[pid])
        ]

        def release_all(_: int, leases: list[Lease] = leases) -> None:
            for lease in leases:
                lease.release()

        with fast_switching(), watching(sel, cat) as problems:
            run_threads(release_all, 4)
        assert not problems, problems[:5]
        assert sel.stats()["summary"]["total_active_rooms"] == 0
        assert all(lease.released for lease in leases)
