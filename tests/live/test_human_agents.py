"""Human agents on real phones: SIPp answers as BrightCart's people (the shipped catalog's
sip:nina@10.77.0.1:5081 and sip:omar@10.77.0.1:5082), a SIPp caller phones the line that
reaches a person (+15550100300, scenario support_to_human), asks for a person, and support
transfers. The tests wait on what the room records, never on the clock."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from livekit import api

from agents.espeak_tts import espeak_voice_for, synthesize_pcm
from config.catalog import load_catalog
from config.settings import PROJECT_ROOT, Settings
from tests.live.harness import PYTHON, WorkerProcess, read_jsonl, server_api, unique, worker_env
from tests.live.phone import (
    Play,
    SippCall,
    TelephonyStack,
    call,
    caller_scenario,
    calls_ended,
    person_phone,
    sync_catalog,
    write_rtp_pcap,
)
from tests.transfer_phones import Bridges, Events, named
from workers.humans.local import LocalDesk
from workers.humans.ring import SipRinger
from workers.humans.transfer import Connected, Transfer

pytestmark = pytest.mark.live

PERSON_LINE = "+15550100300"
NINA, OMAR = 5081, 5082
WAIT_S = 180  # a bound, never a pause: a loaded 2-core machine is slow
CATALOG = load_catalog()


@pytest.fixture(scope="module")
def person_worker(telephony: TelephonyStack, module_tmp: Path) -> Iterator[WorkerProcess]:
    agent = unique("people")
    sync_catalog(telephony, agent)
    proc = WorkerProcess.start(
        module_tmp,
        agent_name=agent,
        name="people-worker",
        LIVEKIT_URL=telephony.url,
        HUMANS_STATE_PATH=str(module_tmp / "humans.json"),
    )
    try:
        asyncio.run(proc.ready())
        yield proc
    finally:
        proc.kill()


@pytest.fixture(autouse=True)
async def rooms_deleted(telephony: TelephonyStack) -> AsyncIterator[None]:
    yield
    async with server_api(telephony.url) as lk:
        for room in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms:
            await lk.room.delete_room(api.DeleteRoomRequest(room=room.name))


def pcap_of(tmp_path: Path, text: str, voice: str, name: str) -> Path:
    rate, pcm = synthesize_pcm(text, espeak_voice_for(voice, name))
    path = tmp_path / f"{name}.pcap"
    write_rtp_pcap(path, pcm, rate)
    return path


def caller(tmp_path: Path, stack: TelephonyStack, number: str) -> SippCall:
    """A caller who listens to the greeting, asks for a person, and stays on the line."""
    ask = pcap_of(tmp_path, "I would like to talk to a person please.", "fable", "ask")
    xml = caller_scenario([Play(ask, 0)], listen_ms=12000, hang_up=False)
    return call(tmp_path, stack, PERSON_LINE, caller=number, scenario_xml=xml)


async def reached(
    worker: WorkerProcess, number: str, done: Callable[[list[dict]], Any]
) -> list[dict]:
    async with asyncio.timeout(WAIT_S):
        while True:
            paths = sorted(worker.transcripts.glob(f"call-*{number.lstrip('+')}*.jsonl"))
            events = [e for p in paths for e in read_jsonl(p)]
            if events and done(events):
                return events
            await asyncio.sleep(0.2)


async def decided(workers: list[WorkerProcess], number: str) -> list[dict]:
    """The transcript of `number`'s call, whichever worker took it, once its transfer has an
    outcome (the person on the line, or the transfer failed)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            for w in workers:
                paths = w.transcripts.glob(f"call-*{number.lstrip('+')}*.jsonl")
                events = [e for p in paths for e in read_jsonl(p)]
                if named(events, "hand_over_human") or named(events, "transfer_failed"):
                    return events
            await asyncio.sleep(0.2)


async def hang_up_caller(stack: TelephonyStack, events: list[dict]) -> None:
    (placed,) = named(events, "call")
    async with server_api(stack.url) as lk:
        await lk.room.remove_participant(
            api.RoomParticipantIdentity(room=events[0]["room"], identity=placed["identity"])
        )


class TimedEvents(Events):
    """Events with the wall-clock time each was recorded (`at`), as a room's transcript has."""

    def __call__(self, event: str, **fields: Any) -> None:
        super().__call__(event, at=time.time(), **fields)


async def test_ring_legs_on_the_sip_service_two_answer_at_once_one_wins(
    telephony: TelephonyStack, tmp_path: Path
):
    """The ringing itself, on livekit-sip with SIP-URI people (the trunk given inline): both
    phones answer at once, exactly one claim wins, the other answered leg is hung up (its
    phone gets a BYE) within 1 s of the win; a third phone that only rings is cancelled. (A leg
    the win cancels before livekit-sip dialled it never rings its phone.)"""
    nina, omar = CATALOG.human_by_id["nina"], CATALOG.human_by_id["omar"]
    rosa = CATALOG.human_by_id["rosa"].model_copy(update={"skills": ("support",)})
    phones = [
        person_phone(tmp_path, NINA, "answer"),
        person_phone(tmp_path, OMAR, "answer"),
        person_phone(tmp_path, 5083, "never"),
    ]
    desk = LocalDesk.open(CATALOG, settings=Settings(humans_state_path=tmp_path / "h.json"))
    events = TimedEvents()
    bridges = Bridges()
    room = unique("ring")
    ringer = SipRinger(
        url=telephony.url,
        api_key="devkey",
        api_secret="secret",
        consult_room=f"{room}-consult",
        trunk_key=None,
        caller_id="brightcart",
    )

    class Everyone:  # the desk's claims, with rosa (sales) rung too
        async def ringable(self, tenant: str, **kw: Any) -> list:
            return [nina, omar, rosa]

        claim = staticmethod(desk.claim)
        release = staticmethod(desk.release)

    transfer = Transfer(
        call=room,
        tenant="brightcart",
        desk=Everyone(),
        ringer=ringer,
        hand_over=lambda **kw: bridges(**kw, record=events),
        record=events,
        ring_timeout_s=15,
    )
    with calls_ended(*phones):
        try:
            async with asyncio.timeout(WAIT_S):
                result = await transfer.run(
                    persona="alex", skill="support", briefing=lambda h: "hi", tts=None
                )
            assert isinstance(result, Connected)
            await events.until(
                lambda ev: (
                    len([e for e in named(ev, "ring_leg") if e["status"] == "cancelled"]) >= 2
                ),
                WAIT_S,
            )
            winner = result.human.id
            loser = ({"nina", "omar"} - {winner}).pop()
            assert [e["human"] for e in named(events, "call_claimed")] == [winner]
            # the loser answered too (its claim refused, then a BYE), or was still ringing (CANCEL)
            answered = {e["human"] for e in named(events, "ring_leg") if e["status"] == "answered"}
            lost = [e["human"] for e in named(events, "claim_lost")]
            assert lost == ([loser] if loser in answered else []), (answered, lost)
            cancelled = {
                e["human"]: e for e in named(events, "ring_leg") if e["status"] == "cancelled"
            }
            assert set(cancelled) == {loser, "rosa"}
            assert all(e["after_win_s"] >= 0 for e in cancelled.values()), cancelled
            losing_phone = phones[0] if loser == "nina" else phones[1]
            # On a loaded machine livekit-sip may not have dialled a losing leg yet when the win
            # removes it (its log: join-failed): that phone never rings, and nothing is to hang up.
            port = {"nina": NINA, "omar": OMAR, "rosa": 5083}
            won_at = named(events, "call_claimed")[0]["at"]
            for human, phone in ((loser, losing_phone), ("rosa", phones[2])):
                if not rung(tmp_path, port[human]):
                    continue
                await phone.result(30)  # off the line (BYE, or CANCEL before it answered)
                # the bound is where it matters, at the phone: the API call that hangs up may
                # return later than the BYE or CANCEL it caused is on the wire
                ended_at = hung_up_at(tmp_path, port[human])
                assert ended_at is not None and ended_at - won_at < 1.0, (human, ended_at, won_at)
            if rung(tmp_path, 5083):
                assert phones[2].proc.returncode == 0, phones[2].output()  # CANCEL answered
            winning_phone = phones[1] if loser == "nina" else phones[0]
            assert winning_phone.proc.poll() is None  # the winner is still on the line
            await transfer.aclose()
            assert await winning_phone.result(30) == 0, winning_phone.output()
        finally:  # before the phones go: no call of this test may outlive it (livekit-sip may
            # send a removed call's BYE seconds later, and a BYE reaching the next test's phone
            # on the same port ends that phone)
            await transfer.aclose()
            for phone in phones:
                with contextlib.suppress(TimeoutError):
                    await phone.result(15)
    await desk.aclose()


def hung_up_at(directory: Path, port: int) -> float | None:
    """When the person's phone at `port` received the BYE or CANCEL that ended its call (SIPp's
    message trace: each message after a line with its local time)."""
    trace = directory / f"person-{port}-msg.log"
    stamp: float | None = None
    for line in trace.read_text(errors="replace").splitlines():
        if line.startswith("-----") and " 20" in line:
            when = line.rsplit(" ", 2)[-2:]  # date, time with microseconds
            stamp = time.mktime(time.strptime(f"{when[0]} {when[1][:8]}", "%Y-%m-%d %H:%M:%S"))
            stamp += float("0" + when[1][8:])
        elif line.startswith(("BYE sip:", "CANCEL sip:")):
            return stamp
    return None


def rung(directory: Path, port: int) -> bool:
    """Whether the person's phone at `port` (tests.live.phone.person_phone) got an INVITE."""
    trace = directory / f"person-{port}-msg.log"
    return trace.exists() and "INVITE sip:" in trace.read_text(errors="replace")


async def test_a_person_rings_then_answers_is_briefed_then_talks_with_the_caller(
    telephony: TelephonyStack, person_worker: WorkerProcess, tmp_path: Path
):
    """support asks for a person; nina rings a while, then answers: she is briefed, joins the
    caller's room as staff_nina, support says goodbye and leaves; omar's phone (never
    answered) is cancelled. The caller hanging up ends the room and frees nina's seat."""
    hello = pcap_of(tmp_path, "Hi Jamie, this is Nina, how can I help?", "nova", "nina")
    nina = person_phone(tmp_path, NINA, "answer", ring_ms=3000, say=hello, say_times=6)
    omar = person_phone(tmp_path, OMAR, "never")
    phone = caller(tmp_path, telephony, "+15550003101")
    with calls_ended(nina, omar, phone):
        events = await reached(person_worker, "+15550003101", lambda ev: named(ev, "personas_left"))
        (requested,) = named(events, "transfer_requested")
        assert sorted(requested["rung"]) == ["nina", "omar"]
        (claimed,) = named(events, "call_claimed")
        assert claimed["human"] == "nina"
        (joined,) = named(events, "human_joined")
        assert joined["identity"] == "staff_nina"
        order = [e["event"] for e in events]
        assert order.index("briefing") < order.index("human_joined")
        holds = [e for e in named(events, "persona_line") if e["kind"] == "hold"]
        assert holds, "the caller heard no hold line while nina rang"
        assert await omar.result(30) == 0, omar.output()  # cancelled while ringing
        after = order.index("hand_over_human")
        assert not [e for e in events[after:] if e["event"] == "utterance"]
        # nina talks with the caller: her speech reaches the caller's room, heard as staff_nina
        events = await reached(
            person_worker,
            "+15550003101",
            lambda ev: [h for h in named(ev, "human") if h["identity"] == "staff_nina"],
        )
        await hang_up_caller(telephony, events)
        events = await reached(
            person_worker, "+15550003101", lambda ev: ev[-1]["event"] == "room_ended"
        )
    assert events[-1]["reason"] == "humans_left"
    statuses = {(e["human"], e["status"]) for e in named(events, "ring_leg")}
    assert ("omar", "cancelled") in statuses and ("nina", "answered") in statuses


async def test_nobody_answers_the_caller_leaves_a_voicemail(
    telephony: TelephonyStack, person_worker: WorkerProcess, tmp_path: Path
):
    """nina declines and omar never answers within the ring timeout (20 s): the transfer
    fails as no_answer, and vera (voicemail, on standby in the room) takes over."""
    nina = person_phone(tmp_path, NINA, "decline")
    omar = person_phone(tmp_path, OMAR, "never")
    phone = caller(tmp_path, telephony, "+15550003102")
    with calls_ended(nina, omar, phone):
        events = await reached(
            person_worker,
            "+15550003102",
            lambda ev: [u for u in named(ev, "utterance") if u["role"] == "voicemail"],
        )
        (failed,) = named(events, "transfer_failed")
        assert failed["reason"] == "no_answer" and failed["then"] == "voicemail"
        (hand,) = named(events, "hand_over")
        assert hand["to"] == "vera"
        statuses = {e["human"]: e["status"] for e in named(events, "ring_leg")}
        assert statuses == {"nina": "declined", "omar": "timed_out"}
        await hang_up_caller(telephony, events)
        await reached(person_worker, "+15550003102", lambda ev: ev[-1]["event"] == "room_ended")


async def test_two_workers_on_one_redis_two_calls_one_person_of_capacity_one(
    telephony: TelephonyStack, module_tmp: Path, tmp_path: Path
):
    """Two workers sharing one Redis (CAPACITY_URL), omar offline for all of them, two
    callers asking for a person at once: nina (capacity 1, her phone answers every call) is
    claimed by exactly one call; the other call's claim is refused or finds nobody free, and
    its caller gets voicemail."""
    agent = unique("pair")
    await asyncio.to_thread(sync_catalog, telephony, agent)
    env = {
        "LIVEKIT_URL": telephony.url,
        "CAPACITY_URL": "redis://127.0.0.1:6379/3",  # the stack's Redis, a database of its own
        "HUMANS_STATE_PATH": str(tmp_path / "humans.json"),
    }
    offline = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "-m", "workers.humans", "set", "omar", "offline"],
        cwd=PROJECT_ROOT,
        env=worker_env(agent, tmp_path, **env),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert offline.returncode == 0, offline.stderr
    workers = [
        WorkerProcess.start(module_tmp, agent_name=agent, name=f"pair-{i}", **env) for i in (1, 2)
    ]
    nina = person_phone(tmp_path, NINA, "answer", calls=2)
    callers: list[SippCall] = []
    try:
        for w in workers:  # a call placed before a worker is registered is never offered
            await w.ready()
        callers += [caller(tmp_path, telephony, n) for n in ("+15550003201", "+15550003202")]
        first, second = await asyncio.gather(
            decided(workers, "+15550003201"), decided(workers, "+15550003202")
        )
    finally:
        for phone in (nina, *callers):
            phone.kill()
        for w in workers:
            w.kill()
    got = [ev for ev in (first, second) if named(ev, "hand_over_human")]
    lost = [ev for ev in (first, second) if named(ev, "transfer_failed")]
    assert len(got) == 1 and len(lost) == 1, (got, lost)
    assert named(got[0], "call_claimed")[0]["human"] == "nina"
    (failed,) = named(lost[0], "transfer_failed")
    assert failed["reason"] in ("no_one_free", "no_answer") and failed["then"] == "voicemail"
    assert all(e["rung"] in (["nina"], []) for e in named(lost[0], "transfer_requested"))
