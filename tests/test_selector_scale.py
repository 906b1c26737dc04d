"""The selector with 1,000 personas in one campaign: every strategy still picks what a full scan
of the pool would pick (the same persona, the same reason, the same draw from a seeded rng),
counts agree with stats(), and a pick looks at a handful of candidates, not the whole pool.
No timing here: throughput figures come from bench/selector.py."""

from __future__ import annotations

import functools
import random
from collections.abc import Collection, Iterator
from typing import Any

import pytest

from config.catalog import Catalog, Strategy
from tests.test_selector import campaign, make_catalog, persona, scenario
from workers.capacity.selector import Lease, NoCapacity, Selector

pytestmark = pytest.mark.integration  # campaigns of 1,000 personas against a full scan

N = 1_000
PRIMARIES = 100


def big_catalog(seed: int = 0, *, shared: bool = True) -> Catalog:
    """N drivers in campaign "big" (the first PRIMARIES primary, ~3% inactive) and, when
    `shared`, campaign "other" reusing every third of them in reverse order: a persona's
    count change must reach both pools."""
    rng = random.Random(seed)
    ids = [f"d{i}" for i in range(N)]
    personas = [persona(pid, cap=rng.randint(1, 4), active=rng.random() > 0.03) for pid in ids]
    personas.append(persona("leg", cap=2))
    big = [(pid, "primary" if i < PRIMARIES else "backup") for i, pid in enumerate(ids)]
    campaigns = [campaign("big", big, legacy="leg")]
    if shared:
        other = [(pid, "primary" if i % 2 else "backup") for i, pid in enumerate(ids[::-3])]
        campaigns.append(campaign("other", other, "least_loaded"))
    return make_catalog(personas, campaigns)


class Counting(Collection[str]):
    """An `exclude` that counts how often the selector asks it about a persona."""

    def __init__(self, ids: Collection[str] = ()) -> None:
        self._ids = frozenset(ids)
        self.asked = 0

    def __contains__(self, item: object) -> bool:
        self.asked += 1
        return item in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


# -- a full scan of the pool: what each strategy must choose, written from DESIGN.md ---------


class Scan:
    """The selection rules as a plain scan over the catalog, with its own seeded rng."""

    def __init__(self, cat: Catalog, sel: Selector, seed: int) -> None:
        self.cat = cat
        self.sel = sel
        self.rng = random.Random(seed)
        self.cursor: dict[tuple[str, str], int] = {}
        self.caps = {p.id: p.max_concurrent if p.active else 0 for p in cat.personas}

    @functools.cache  # noqa: B019 (one Scan per test)
    def assigned(self, cid: str, role: str) -> list[tuple[str, str]]:
        camp = self.cat.campaign(cid)
        return [
            (a.persona, a.priority)
            for a in camp.assignments
            if self.cat.persona(a.persona).role == role
        ]

    def free(self, pid: str, exclude: Collection[str]) -> bool:
        return self.sel.active_rooms(pid) < self.caps[pid] and pid not in exclude

    def pick(
        self, cid: str, role: str, strategy: Strategy, exclude: Collection[str]
    ) -> tuple[str, str] | None:
        """(persona id, reason) among the campaign's assigned personas, or None."""
        assigned = self.assigned(cid, role)
        ids = [pid for pid, _ in assigned]
        free = [pid for pid in ids if self.free(pid, exclude)]
        if not free:
            return None
        is_free = set(free)
        if strategy == Strategy.PRIMARY_FIRST:
            primaries = [pid for pid, prio in assigned if prio == "primary"]
            order = primaries + [pid for pid, prio in assigned if prio == "backup"]
            pid = next(p for p in order if p in is_free)
            if pid in set(primaries):
                return pid, "primary"
            return pid, self.backup_reason(primaries, exclude)
        if strategy == Strategy.ROUND_ROBIN:
            start = self.cursor.get((cid, role), 0)
            i = next(
                (start + k) % len(ids)
                for k in range(len(ids))
                if ids[(start + k) % len(ids)] in is_free
            )
            self.cursor[(cid, role)] = (i + 1) % len(ids)
            return ids[i], "round robin"
        if strategy == Strategy.LEAST_LOADED:
            low = min(self.sel.active_rooms(pid) for pid in free)
            best = [pid for pid in free if self.sel.active_rooms(pid) == low]
            pid = best[0] if len(best) == 1 else self.rng.choice(best)
            return pid, f"least loaded ({low} of {self.cat.persona(pid).max_concurrent})"
        return self.rng.choice(free), "random"

    def backup_reason(self, primaries: list[str], exclude: Collection[str]) -> str:
        if not primaries:
            return "backup"
        causes = []
        for pid in primaries:
            if not self.cat.persona(pid).active:
                causes.append("inactive")
            elif pid in exclude:
                causes.append("already in the room")
            else:
                causes.append("at capacity")
        cause = "at capacity" if "at capacity" in causes else causes[0]
        return f"backup: primary {cause}"


def check_counts(sel: Selector, cat: Catalog, held: list[Lease]) -> None:
    rooms: dict[str, int] = {}
    for lease in held:
        if not lease.released:
            rooms[lease.persona.id] = rooms.get(lease.persona.id, 0) + 1
    stats = sel.stats()
    for row in stats["personas"]:
        assert row["active"] == rooms.get(row["id"], 0) == sel.active_rooms(row["id"])
        p = cat.persona(row["id"])
        assert row["available"] == (p.active and row["active"] < p.max_concurrent)
    assert stats["summary"]["total_active_rooms"] == sum(rooms.values())


def random_run(
    cat: Catalog, seed: int, strategies: list[Strategy], steps: int
) -> Iterator[tuple[Any, Any]]:
    """Random acquires and releases; yields (what the selector did, what a scan says)."""
    ops = random.Random(seed)
    sel = Selector(cat, rng=random.Random(seed))
    scan = Scan(cat, sel, seed)
    ids = [p.id for p in cat.personas]
    held: list[Lease] = []
    for step in range(steps):
        roll = ops.random()
        if roll < 0.55 or not held:
            cid = ops.choice([c.id for c in cat.campaigns])
            strategy = ops.choice(strategies)
            exclude = frozenset(ops.sample(ids, 2)) if ops.random() < 0.1 else frozenset()
            want = scan.pick(cid, "driver", strategy, exclude)
            try:
                lease = sel.acquire(cid, "driver", strategy, exclude=exclude)
            except NoCapacity:
                yield None, want
                continue
            held.append(lease)
            got = (lease.persona.id, lease.reason)
            yield got, want if want is not None else got  # None: a fallback, not the pool's
        elif roll < 0.65:
            try:
                held.append(sel.acquire_persona(ops.choice(ids)))
            except NoCapacity:
                pass
        else:
            held.pop(ops.randrange(len(held))).release()
        if step % 500 == 0:
            check_counts(sel, cat, held)
    check_counts(sel, cat, held)
    for lease in held:
        lease.release()
    assert sel.stats()["summary"]["total_active_rooms"] == 0


# -- each strategy at scale picks what the scan picks -----------------------------------------


@pytest.mark.parametrize("strategy", list(Strategy))
def test_each_strategy_picks_what_a_full_scan_would(strategy: Strategy):
    for got, want in random_run(big_catalog(1), seed=11, strategies=[strategy], steps=4_000):
        assert got == want


def test_mixed_strategies_over_shared_pools_agree_with_the_scan():
    """Both campaigns share personas: a room taken through one must count in the other."""
    pairs = list(random_run(big_catalog(2), seed=5, strategies=list(Strategy), steps=6_000))
    assert len(pairs) > 3_000
    for got, want in pairs:
        assert got == want


def test_least_loaded_picks_a_minimum_count_persona_whatever_the_history():
    cat = big_catalog(3, shared=False)
    sel = Selector(cat, rng=random.Random(3))
    ops = random.Random(3)
    held: list[Lease] = []
    caps = {p.id: p.max_concurrent for p in cat.personas if p.active and p.id != "leg"}
    for _ in range(3_000):
        if held and ops.random() < 0.4:
            held.pop(ops.randrange(len(held))).release()
            continue
        free = {pid: sel.active_rooms(pid) for pid, cap in caps.items()}
        free = {pid: n for pid, n in free.items() if n < caps[pid]}
        lease = sel.acquire("big", "driver", Strategy.LEAST_LOADED)
        held.append(lease)
        if not free:
            assert lease.reason == "legacy persona"
            continue
        low = min(free.values())
        assert free[lease.persona.id] == low
        assert lease.reason == f"least loaded ({low} of {caps[lease.persona.id]})"
    check_counts(sel, cat, held)


def test_random_only_picks_free_personas_and_reaches_all_of_them():
    cat = big_catalog(4, shared=False)
    sel = Selector(cat, rng=random.Random(4))
    active = [p for p in cat.personas if p.active and p.id != "leg"]
    left_free = {p.id for p in active[::50]}  # 20 personas stay free, the rest are full
    held = [
        sel.acquire_persona(p.id) for p in active if p.id not in left_free
        for _ in range(p.max_concurrent)
    ]  # fmt: skip
    seen = set()
    for _ in range(600):
        lease = sel.acquire("big", "driver", Strategy.RANDOM)
        assert lease.persona.id in left_free and lease.reason == "random"
        seen.add(lease.persona.id)
        lease.release()
    assert seen == left_free
    check_counts(sel, cat, held)


def test_primary_first_with_every_primary_full_goes_to_the_first_free_backup():
    cat = big_catalog(5, shared=False)
    sel = Selector(cat)
    primaries = [a.persona for a in cat.campaign("big").assignments if a.priority == "primary"]
    held = [
        sel.acquire_persona(pid)
        for pid in primaries
        if cat.persona(pid).active
        for _ in range(cat.persona(pid).max_concurrent)
    ]
    backups = [
        a.persona
        for a in cat.campaign("big").assignments
        if a.priority == "backup" and cat.persona(a.persona).active
    ]
    lease = sel.acquire("big", "driver")
    assert (lease.persona.id, lease.reason) == (backups[0], "backup: primary at capacity")
    held[0].release()  # one primary frees a room: primary_first goes back to it
    again = sel.acquire("big", "driver")
    assert (again.persona.id, again.reason) == (held[0].persona.id, "primary")


def test_the_backup_reason_names_the_cause_when_no_primary_is_merely_full():
    cat = make_catalog(
        [persona("p1", cap=1), persona("p2", active=False)]
        + [persona(f"b{i}") for i in range(N)],
        [campaign("c1", [("p1", "primary"), ("p2", "primary")] + [
            (f"b{i}", "backup") for i in range(N)
        ])],
    )  # fmt: skip
    sel = Selector(cat)
    full = sel.acquire("c1", "driver")
    assert (full.persona.id, full.reason) == ("p1", "primary")
    # p1 is full but already in the room, p2 is inactive: the first primary's cause is given
    lease = sel.acquire("c1", "driver", exclude=frozenset({"p1"}))
    assert (lease.persona.id, lease.reason) == ("b0", "backup: primary already in the room")
    assert sel.acquire("c1", "driver").reason == "backup: primary at capacity"
    full.release()
    lease = sel.acquire("c1", "driver", exclude=frozenset({"p1"}))
    assert lease.reason == "backup: primary already in the room"


def test_a_cast_excludes_a_pinned_persona_from_the_big_pool():
    cat = big_catalog(6, shared=False)
    sel = Selector(cat, rng=random.Random(6))
    first = next(p.id for p in cat.personas if p.active)
    s = scenario(
        "big",
        {"role": "dispatcher", "persona": first},
        {"role": "driver"},
    )
    for strategy in Strategy:
        cast = sel.cast(s, strategy)
        driver = cast.member_for("driver")
        assert driver is not None and driver.persona.id != first
        cast.release()
    assert sel.stats()["summary"]["total_active_rooms"] == 0


# -- the cost of a pick does not grow with the pool -------------------------------------------


@pytest.mark.parametrize(
    "strategy", [Strategy.PRIMARY_FIRST, Strategy.LEAST_LOADED, Strategy.RANDOM]
)
def test_a_pick_consults_a_handful_of_candidates_not_the_whole_pool(strategy: Strategy):
    """`exclude` is asked about each candidate a pick considers: with 1,000 free personas
    (and, for primary_first, every primary full) that stays a handful, not one per persona."""
    cat = big_catalog(7, shared=False)
    sel = Selector(cat, rng=random.Random(7))
    for pid in (a.persona for a in cat.campaign("big").assignments[:PRIMARIES]):
        p = cat.persona(pid)
        for _ in range(p.max_concurrent if p.active else 0):
            sel.acquire_persona(pid)
    for exclude in (Counting({"someone-else"}), Counting({"d500", "d501"})):
        for _ in range(50):
            lease = sel.acquire("big", "driver", strategy, exclude=exclude)
            assert lease.persona.id not in {"d500", "d501"}
            lease.release()
        assert exclude.asked <= 50 * 4, f"{strategy}: asked {exclude.asked} times for 50 picks"
