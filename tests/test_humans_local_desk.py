"""The in-process desk (`LocalDesk`, a `HumanDesk`): who to ring with run-time states and seats,
one winner per call, seats back on release and on close; on memory and on a real Redis, where
two desks stand for two workers. A store that cannot answer is nobody free, never a crash."""

from __future__ import annotations

import asyncio

import pytest

from config.settings import Settings
from tests.humans_catalog import BRIGHT, human, humans_catalog
from tests.redis_server import RedisServer
from workers.capacity.redis_store import RedisStore
from workers.humans.availability import FileAvailability
from workers.humans.desk import HumanDesk
from workers.humans.local import LocalDesk

CATALOG = humans_catalog(
    [
        human("alice", skills=["support"]),
        human("bob", skills=["support"], capacity=2),
        human("cleo", skills=["sales"], availability="offline"),
    ],
    [{"contact": "c-7", "tenant": BRIGHT, "agents": ["alice"]}],
)
ALICE, BOB, CLEO = (CATALOG.human_by_id[i] for i in ("alice", "bob", "cleo"))


async def ring(desk: HumanDesk, *, assigned: tuple[str, ...] = (), skill: str | None = "support"):
    return [h.id for h in await desk.ringable(BRIGHT, assigned=assigned, skill=skill)]


def settings_for(tmp_path, url: str | None = None) -> Settings:
    return Settings(humans_state_path=tmp_path / "humans.json", capacity_url=url)


def settled(url: str) -> str:
    """A Redis workers have used already: not one that just came up empty, where new claims
    wait out the settle window (workers/capacity/redis_store.py)."""
    store = RedisStore(url)  # no settle window of its own: marks the Redis settled now
    store.needs_refresh()
    store.close()
    return url


async def test_a_local_desk_is_a_human_desk_claims_once_and_releases(tmp_path):
    desk: HumanDesk = LocalDesk.open(CATALOG, settings=settings_for(tmp_path))
    assert await ring(desk) == ["alice", "bob"]
    assert await ring(desk, assigned=("alice",)) == ["alice"]
    assert await desk.claim("room-1", ALICE) is True
    assert await desk.claim("room-1", BOB) is False  # the call has its winner
    assert await ring(desk, assigned=("alice",)) == ["bob"]  # alice's one seat is taken
    await desk.release("room-1", ALICE)
    await desk.release("room-1", ALICE)  # idempotent
    assert await ring(desk, assigned=("alice",)) == ["alice"]
    assert isinstance(desk, LocalDesk)
    await desk.aclose()


async def test_an_operators_change_is_seen_at_the_next_transfer(tmp_path):
    settings = settings_for(tmp_path)
    desk = LocalDesk.open(CATALOG, settings=settings)
    operator = FileAvailability(settings.humans_state_path)  # as `workers.humans set` does
    assert await ring(desk, skill=None) == ["alice", "bob"]
    operator.set(ALICE, "busy")
    operator.set(CLEO, "available")
    assert await ring(desk, skill=None) == ["bob", "cleo"]
    operator.set(BOB, "offline")
    assert await ring(desk, assigned=("alice",), skill=None) == ["cleo"]
    await desk.aclose()


async def test_closing_the_desk_gives_every_seat_back(tmp_path):
    settings = settings_for(tmp_path)
    desk = LocalDesk.open(CATALOG, settings=settings)
    assert await desk.claim("room-1", BOB) and await desk.claim("room-2", BOB)
    assert await ring(desk) == ["alice"]
    store_claims = desk.core.claims
    await desk.aclose()
    assert store_claims.busy_seats(["bob"]) == {"bob": 0}


@pytest.mark.integration
async def test_two_workers_desks_on_one_redis_see_one_state_and_one_winner(tmp_path, redis_url):
    settled(redis_url)
    one = LocalDesk.open(CATALOG, settings=settings_for(tmp_path, redis_url), job_id="job-a")
    two = LocalDesk.open(CATALOG, settings=settings_for(tmp_path, redis_url), job_id="job-b")
    try:
        won = await asyncio.gather(one.claim("room-1", ALICE), two.claim("room-1", BOB))
        assert sorted(won) == [False, True]
        # a seat one worker took is seen by the other; so is a state set through the other
        one.core.states.set(BOB, "busy")
        # alice is free only if bob won the call; bob is busy by state whatever happened
        assert await ring(two) == (["alice"] if won[1] else [])
        assert one._refresher is not None or two._refresher is not None  # shared leases live
    finally:
        await one.aclose()
        await two.aclose()
    again = LocalDesk.open(CATALOG, settings=settings_for(tmp_path, redis_url))
    assert await ring(again) == ["alice"]  # seats back; bob's state is still busy in Redis
    await again.aclose()


@pytest.mark.integration
async def test_redis_down_is_nobody_free_never_a_crash(tmp_path, own_redis_server: RedisServer):
    url = settled(own_redis_server.url)
    desk = LocalDesk.open(CATALOG, settings=settings_for(tmp_path, url))
    try:
        assert await ring(desk) == ["alice", "bob"]
        own_redis_server.stop()
        assert await ring(desk) == []
        assert await desk.claim("room-1", ALICE) is False
        await desk.release("room-1", ALICE)  # nothing held: nothing to do
    finally:
        await desk.aclose()
