"""The transfer's ring and claim (workers/humans/transfer.py) over the real desk (LocalDesk, on
memory and on a real Redis): everyone free is rung at once, the first answer whose claim the
desk grants wins, every other leg is hung up within 1 s of the win (ringing or answered), and
nobody free / nobody answering / everyone declining each fail with their reason. The phones
are the tests' (tests/transfer_phones.py): LiveKit's SIP service is the only thing scripted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from config.settings import Settings
from tests.humans_catalog import BRIGHT, human, humans_catalog
from tests.transfer_phones import Bridges, Events, Phones, named
from workers.capacity.redis_store import RedisStore
from workers.humans.local import LocalDesk
from workers.humans.transfer import Connected, Failed, Transfer

CATALOG = humans_catalog(
    [
        human("alice", skills=["support"]),
        human("bob", skills=["support"]),
        human("cleo", skills=["support"]),
        human("dev", skills=["sales"]),
    ],
)
HUMANS = CATALOG.human_by_id
WAIT_S = 10  # a bound on each wait, never a pause


def transfer(desk: LocalDesk, phones: Phones, *, call: str = "room-1", timeout_s: float = 5.0):
    events = Events()
    bridges = Bridges()

    def hand_over(**kw: Any) -> Any:
        return bridges(**kw, record=events)

    t = Transfer(
        call=call,
        tenant=BRIGHT,
        desk=desk,
        ringer=phones,
        hand_over=hand_over,
        record=events,
        ring_timeout_s=timeout_s,
    )
    return t, events, bridges


async def run(t: Transfer) -> Connected | Failed:
    async with asyncio.timeout(WAIT_S):
        return await t.run(
            persona="alex", skill="support", briefing=lambda h: f"hi {h.name}", tts=None
        )


def settled(url: str) -> str:
    """A Redis workers have used already (no settle window for new claims)."""
    store = RedisStore(url)
    store.needs_refresh()
    store.close()
    return url


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """Each test on both capacity stores: this process's memory, and a real Redis."""
    if request.param == "memory":
        return None
    return settled(request.getfixturevalue("redis_url"))


@pytest.fixture
async def desk(tmp_path, store_url):
    settings = Settings(humans_state_path=tmp_path / "humans.json", capacity_url=store_url)
    d = LocalDesk.open(CATALOG, settings=settings)
    yield d
    await d.aclose()


async def test_two_answer_at_the_same_moment_exactly_one_wins_the_other_is_hung_up(desk):
    phones = Phones({"alice": "answer", "bob": "answer", "cleo": "never"})
    t, events, bridges = transfer(desk, phones)
    result = await run(t)
    assert isinstance(result, Connected)
    (claimed,) = named(events, "call_claimed")
    winner = claimed["human"]
    loser = ({"alice", "bob"} - {winner}).pop()
    assert named(events, "claim_lost") == [{"event": "claim_lost", "human": loser}]
    assert result.human.id == winner and [line.human.id for line in bridges.lines] == [winner]
    await t.aclose()
    # the loser's answered leg and cleo's ringing leg were hung up; the winner's only at the end
    assert set(phones.hung_up[:2]) == {loser, "cleo"} and phones.hung_up[-1] == winner
    legs = {(e["human"], e["status"]) for e in named(events, "ring_leg")}
    assert {(winner, "answered"), (loser, "answered"), (loser, "cancelled")} <= legs
    assert ("cleo", "cancelled") in legs
    (requested,) = named(events, "transfer_requested")
    assert sorted(requested["rung"]) == ["alice", "bob", "cleo"] and requested["skill"] == "support"
    assert named(events, "hand_over_human") == [
        {"event": "hand_over_human", "from_persona": "alex", "human": winner}
    ]
    # the seat came back when the transfer closed
    assert await desk.claim("room-2", HUMANS[winner]) is True


async def test_the_other_legs_are_hung_up_within_a_second_of_the_win(desk):
    phones = Phones({"alice": "held", "bob": "never", "cleo": "never"})
    t, events, _ = transfer(desk, phones)
    running = asyncio.ensure_future(run(t))
    async with asyncio.timeout(WAIT_S):
        for phone in phones.phones.values():
            await phone.rang.wait()
    phones.phones["alice"].answer()
    result = await running
    assert isinstance(result, Connected) and result.human.id == "alice"
    # 3 ringing, alice answered, 2 cancelled
    await events.until(lambda ev: len(named(ev, "ring_leg")) >= 6)
    cancelled = [e for e in named(events, "ring_leg") if e["status"] == "cancelled"]
    assert {e["human"] for e in cancelled} == {"bob", "cleo"}
    assert all(e["after_win_s"] < 1.0 for e in cancelled), cancelled
    await t.aclose()


@pytest.mark.parametrize(
    ("behaviours", "reason"),
    [
        ({"alice": "decline", "bob": "busy", "cleo": "decline"}, "all_declined"),
        ({"alice": "never", "bob": "decline", "cleo": "never"}, "no_answer"),
    ],
)
async def test_nobody_answering_or_everyone_declining_fails_with_its_reason(
    desk, behaviours, reason
):
    phones = Phones(behaviours)
    t, events, bridges = transfer(desk, phones, timeout_s=0.3)
    result = await run(t)
    assert result == Failed(reason)
    assert not named(events, "call_claimed") and not bridges.lines
    statuses = {e["human"]: e["status"] for e in named(events, "ring_leg")}
    expected = {"never": "timed_out", "decline": "declined", "busy": "busy"}
    assert statuses == {h: expected[b] for h, b in behaviours.items()}
    await t.aclose()


async def test_nobody_free_is_nobody_rung(desk, tmp_path):
    for h in ("alice", "bob", "cleo"):
        assert await desk.claim(f"other-{h}", HUMANS[h])  # each one's only seat taken
    phones = Phones({})
    t, events, _ = transfer(desk, phones)
    assert await run(t) == Failed("no_one_free")
    (requested,) = named(events, "transfer_requested")
    assert requested["rung"] == [] and not named(events, "ring_leg")


async def test_a_leg_whose_claim_is_refused_is_hung_up_and_the_others_still_ring(desk):
    phones = Phones({"alice": "answer", "bob": "held", "cleo": "never"})
    t, events, _ = transfer(desk, phones)
    running = asyncio.ensure_future(run(t))
    async with asyncio.timeout(WAIT_S):
        await phones.phones["bob"].rang.wait()
    await events.until(lambda ev: named(ev, "call_claimed"))
    assert named(events, "call_claimed")[0]["human"] == "alice"
    result = await running
    assert isinstance(result, Connected)
    await t.aclose()
    # a second call for the same people: alice's seat is free again, taken by room-9 meanwhile
    assert await desk.claim("room-9", HUMANS["alice"]) is True
    phones2 = Phones({"alice": "answer", "bob": "held", "cleo": "never"})
    t2, _, _ = transfer(desk, phones2, call="room-3")
    running = asyncio.ensure_future(run(t2))
    async with asyncio.timeout(WAIT_S):
        await phones2.phones["bob"].rang.wait()
    phones2.phones["bob"].answer()
    result = await running
    assert isinstance(result, Connected) and result.human.id == "bob"
    await t2.aclose()


async def test_a_transfer_cancelled_while_ringing_hangs_up_every_leg_and_holds_no_seat(desk):
    phones = Phones({"alice": "never", "bob": "never", "cleo": "never"})
    t, _, _ = transfer(desk, phones)
    running = asyncio.ensure_future(run(t))
    async with asyncio.timeout(WAIT_S):
        for phone in phones.phones.values():
            await phone.rang.wait()
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert sorted(phones.hung_up) == ["alice", "bob", "cleo"]
    assert [h.id for h in await desk.ringable(BRIGHT, assigned=(), skill="support")] == [
        "alice", "bob", "cleo",
    ]  # fmt: skip


async def test_a_person_who_drops_off_during_the_briefing_is_released(desk):
    phones = Phones({"alice": "answer", "bob": "never", "cleo": "never"})
    t, _, bridges = transfer(desk, phones)
    bridges.fail = True
    assert await run(t) == Failed("hung_up_at_once")
    assert "alice" in phones.hung_up
    assert await desk.claim("room-2", HUMANS["alice"]) is True  # released


@pytest.mark.integration
async def test_two_workers_on_one_redis_one_human_of_capacity_one(tmp_path, redis_url):
    """Two desks on one Redis (two workers), two calls transferring to alice (capacity 1) at
    the same moment: exactly one gets her; the other call's claim is refused, and it gets the
    next person, bob."""
    catalog = humans_catalog([human("alice", skills=["support"]), human("bob", skills=["support"])])
    settings = Settings(humans_state_path=tmp_path / "humans.json", capacity_url=settled(redis_url))
    desks = [LocalDesk.open(catalog, settings=settings, job_id=f"job-{i}") for i in range(2)]
    try:
        phones = [Phones({"alice": "held", "bob": "held"}) for _ in desks]
        transfers = [
            transfer(d, p, call=f"room-{i}")
            for i, (d, p) in enumerate(zip(desks, phones, strict=True))
        ]
        running = [asyncio.ensure_future(run(t)) for t, _, _ in transfers]
        async with asyncio.timeout(WAIT_S):  # both calls ring alice and bob
            for p in phones:
                await p.phones["alice"].rang.wait()
                await p.phones["bob"].rang.wait()
        for p in phones:  # alice answers both calls at the same moment
            p.phones["alice"].answer()
        for _, ev, _ in transfers:  # one call has her, the other lost her
            await ev.until(lambda e: named(e, "call_claimed") or named(e, "claim_lost"))
        lost = [ev for _, ev, _ in transfers if named(ev, "claim_lost")]
        assert len(lost) == 1 and named(lost[0], "claim_lost")[0]["human"] == "alice"
        for p in phones:
            p.phones["bob"].answer()
        results = await asyncio.gather(*running)
        assert sorted(r.human.id for r in results if isinstance(r, Connected)) == ["alice", "bob"]
        for t, _, _ in transfers:
            await t.aclose()
    finally:
        for d in desks:
            await d.aclose()
