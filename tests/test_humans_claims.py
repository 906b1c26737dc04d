"""A call taken by a human agent is one claim of two claimants in the capacity store: exactly one
winner per call, a human's seats counted like a persona's, given back on release. On both
stores: in memory, and a real redis-server (tests/redis_server.py) where two stores stand for
two workers on one Redis."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from functools import partial

import pytest

from config.catalog import Catalog
from tests.humans_catalog import BRIGHT, human, humans_catalog
from tests.redis_server import RedisServer
from workers.capacity.memory_store import MemoryStore
from workers.capacity.redis_store import RedisStore
from workers.capacity.selector import Selector
from workers.capacity.store import CapacityStore, CapacityStoreUnavailable
from workers.humans.claims import HumanClaims, HumanSeat

RACES = 20  # each race run this many times: a lost race must never give two winners
JOIN_S = 10.0  # a hang guard for the racing threads


@pytest.fixture
def catalog() -> Catalog:
    return humans_catalog(
        [human("alice", skills=["support"]), human("bob", capacity=2, skills=["support"])]
    )


# Two claimers of one store: two job processes asking one worker (memory), or two workers on
# one Redis (two stores, each its own connection and worker id).
ClaimersFactory = Callable[[], tuple[HumanClaims, HumanClaims]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def claimers(request: pytest.FixtureRequest) -> Iterator[ClaimersFactory]:
    opened: list[CapacityStore] = []

    def make() -> tuple[HumanClaims, HumanClaims]:
        if request.param == "memory":
            store = MemoryStore()
            opened.append(store)
            lock = threading.Lock()
            return HumanClaims(store, lock=lock), HumanClaims(store, lock=lock)
        url = request.getfixturevalue("redis_url")
        a, b = RedisStore(url), RedisStore(url)
        opened.extend((a, b))
        return HumanClaims(a), HumanClaims(b)

    yield make
    for store in opened:
        store.close()


def race(*claims: Callable[[], HumanSeat | None]) -> list[HumanSeat | None]:
    """Run the claims at the same moment, each in its own thread; their results in order."""
    start = threading.Barrier(len(claims))
    results: list[HumanSeat | None] = [None] * len(claims)

    def run(i: int) -> None:
        start.wait(JOIN_S)
        results[i] = claims[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(claims))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_S)
        assert not t.is_alive(), "a claim hung"
    return results


def test_two_answers_racing_for_one_call_give_exactly_one_winner(claimers, catalog):
    alice, bob = catalog.human_by_id["alice"], catalog.human_by_id["bob"]
    for n in range(RACES):
        a, b = claimers()
        call = f"call-room-{n}"
        won = race(partial(a.claim, "job-1", call, alice), partial(b.claim, "job-2", call, bob))
        assert sum(seat is not None for seat in won) == 1, won
        winner = next(seat for seat in won if seat is not None)
        loser = bob if winner.human is alice else alice
        # the loser's seat was not taken by the refused claim
        assert a.busy_seats([loser.id]) == {loser.id: 0}
        assert a.busy_seats([winner.human.id]) == {winner.human.id: 1}
        winner.release()  # the next race starts with every seat free


def test_two_calls_racing_for_one_human_of_capacity_one_give_one(claimers, catalog):
    alice = catalog.human_by_id["alice"]
    for n in range(RACES):
        a, b = claimers()
        won = race(
            partial(a.claim, "job-1", f"call-a-{n}", alice),
            partial(b.claim, "job-2", f"call-b-{n}", alice),
        )
        assert sum(seat is not None for seat in won) == 1, won
        assert b.busy_seats(["alice"]) == {"alice": 1}
        for seat in won:
            if seat is not None:
                seat.release()


def test_a_human_takes_as_many_calls_as_their_capacity(claimers, catalog):
    a, b = claimers()
    bob = catalog.human_by_id["bob"]  # capacity 2
    first, second = a.claim("j1", "call-1", bob), b.claim("j2", "call-2", bob)
    assert first is not None and second is not None
    assert a.claim("j3", "call-3", bob) is None
    assert a.busy_seats(["bob"]) == {"bob": 2}


def test_release_frees_the_seat_and_the_call_once(claimers, catalog):
    a, b = claimers()
    alice, bob = catalog.human_by_id["alice"], catalog.human_by_id["bob"]
    seat = a.claim("j1", "call-1", alice)
    assert seat is not None
    assert b.claim("j2", "call-2", alice) is None  # her one seat is taken
    seat.release()
    seat.release()  # idempotent: counted back once
    assert a.busy_seats(["alice"]) == {"alice": 0}
    again = b.claim("j2", "call-2", alice)
    assert again is not None
    # the released call can be claimed again (a second transfer of the same call)
    assert a.claim("j1", "call-1", bob) is not None
    assert b.busy_seats(["alice", "bob"]) == {"alice": 1, "bob": 1}


def test_a_refused_claim_takes_nothing(claimers, catalog):
    a, b = claimers()
    alice, bob = catalog.human_by_id["alice"], catalog.human_by_id["bob"]
    assert a.claim("j1", "call-1", alice) is not None
    # bob answers call-1 too late: neither his seat nor anything else is taken
    assert b.claim("j2", "call-1", bob) is None
    assert b.busy_seats(["bob"]) == {"bob": 0}
    # alice is full: a claim of a new call for her does not keep that call either
    assert b.claim("j2", "call-2", alice) is None
    assert b.claim("j2", "call-2", bob) is not None


def test_a_bad_call_key_is_refused_before_the_store(claimers, catalog):
    a, _ = claimers()
    for bad in ("", "two words", "x" * 257, "tab\there"):
        with pytest.raises(ValueError, match="call's key"):
            a.claim("j1", bad, catalog.human_by_id["alice"])


@pytest.mark.parametrize(
    "store_kind", ["memory", pytest.param("redis", marks=pytest.mark.integration)]
)
def test_human_seats_are_not_in_the_persona_selectors_counts(store_kind, catalog, request):
    store: CapacityStore = (
        MemoryStore()
        if store_kind == "memory"
        else RedisStore(request.getfixturevalue("redis_url"))
    )
    selector = Selector(catalog, store=store)
    claims = HumanClaims(store, lock=selector.store_lock)
    try:
        before = selector.stats()
        assert claims.claim("j1", "call-1", catalog.human_by_id["bob"]) is not None
        after = selector.stats()
        assert after == before
        assert selector.own_rooms() == {}
        assert selector.worker_load() == 0.0
        # a persona's room is still counted as always, next to the human's seat
        lease = selector.acquire_persona("alex")
        assert selector.own_rooms() == {"alex": 1}
        lease.release()
    finally:
        selector.close()


@pytest.mark.integration
def test_redis_down_is_capacity_store_unavailable_not_a_crash(own_redis_server: RedisServer):
    catalog = humans_catalog([human("alice", tenant=BRIGHT)])
    store = RedisStore(own_redis_server.url, retry_after_s=0.0)
    claims = HumanClaims(store)
    try:
        seat = claims.claim("j1", "call-1", catalog.human_by_id["alice"])
        assert seat is not None
        own_redis_server.stop()
        with pytest.raises(CapacityStoreUnavailable, match="unavailable"):
            claims.claim("j2", "call-2", catalog.human_by_id["alice"])
        with pytest.raises(CapacityStoreUnavailable):
            claims.busy_seats(["alice"])
        seat.release()  # logged, not raised: the lease is no longer refreshed and expires
        assert seat.released
    finally:
        store.close()
