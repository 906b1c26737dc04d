"""The warm hand-over on the real telephony stack: a SIPp phone is the human agent, dialled
into the consult room with CreateSIPParticipant (as a transfer's ring leg is), and a
Python-SDK participant is the caller in the caller's room.

What the phone hears is read off the wire (RTP to its media port, `RtpTap`); what the caller
hears is what its room delivers from `staff_<id>`. Every wait is on a condition, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from livekit import api, rtc

from agents.espeak_tts import HUMAN_VOICE, EspeakTTS, espeak_voice_for, synthesize_pcm
from agents.sphinx_stt import SphinxRecognizer, to_pcm16k
from config.humans import HumanAgent
from tests.live import harness
from tests.live.harness import API_KEY, API_SECRET, human_token, server_api, unique
from tests.live.listening_phone import SPEECH_RMS, ListeningPhone, RtpTap
from tests.live.phone import LIVE_ADDR, TelephonyStack, write_rtp_pcap
from workers.humans.bridge import HandOverFailed, HumanOnLine, warm_hand_over

pytestmark = [pytest.mark.live, pytest.mark.filterwarnings("ignore:The HMAC key is")]

WAIT_S = 90  # a bound, never a pause: the 2 cores are shared with other work
HUMAN_LINE = "Hello, this is Dana from support. How can I help you today?"
CALLER_LINE = "My blender arrived with a cracked jar and I would like a new one."
BRIEFING = (
    "Incoming transfer. Jamie Rivera, order one two three four. The blender jar arrived "
    "cracked. A replacement was offered. They asked for a person."
)
TRUNK_NUMBER = "+15550100900"
DANA = HumanAgent(id="dana", tenant="brightcart", name="Dana Reyes", phone="+15550100555")


class Recorder:
    """The room's `record`: every event with the time it was recorded."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, "at": time.time(), **fields})

    def one(self, name: str) -> dict[str, Any]:
        (found,) = [e for e in self.events if e["event"] == name]
        return found


class Caller:
    """The caller in the caller's room: speaks through a track of its own, and keeps every
    frame it receives from `staff_` participants with its arrival time."""

    def __init__(self, room: rtc.Room) -> None:
        self.room = room
        self.source = rtc.AudioSource(48_000, 1)
        self.heard: list[tuple[float, rtc.AudioFrame]] = []
        self.staff_seen_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        room.on("participant_connected", self._seen)
        room.on("track_subscribed", self._subscribed)

    def _seen(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity.startswith("staff_") and self.staff_seen_at is None:
            self.staff_seen_at = time.time()

    def _subscribed(self, track: rtc.Track, _pub: Any, participant: rtc.RemoteParticipant) -> None:
        if participant.identity.startswith("staff_"):
            task = asyncio.create_task(self._listen(track))
            self._tasks.add(task)

    async def _listen(self, track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=48_000, num_channels=1):
            self.heard.append((time.time(), event.frame))

    def received_s(self, after: float) -> float:
        return sum(f.duration for at, f in self.heard if at >= after)

    def speech_s(self, after: float = 0.0) -> float:
        return sum(f.duration for at, f in self.heard if at >= after and rms(f) > SPEECH_RMS)

    async def say(self, text: str) -> float:
        """Speak `text` (eSpeak, at real-time pace); returns when it started."""
        rate, pcm = synthesize_pcm(text, espeak_voice_for("fable", "caller"))
        resampler = rtc.AudioResampler(rate, 48_000, num_channels=1)
        frame = rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2)
        started = time.time()
        for out in [*resampler.push(frame), *resampler.flush()]:
            await self.source.capture_frame(out)
        return started

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()


def rms(frame: rtc.AudioFrame) -> float:
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


async def until(holds: Any, what: str, timeout: float = WAIT_S) -> None:
    await harness.until(holds, what, timeout)


@pytest.fixture
async def trunk(telephony: TelephonyStack) -> AsyncIterator[str]:
    """An outbound trunk to the human's phone (SIPp on LIVE_ADDR:5090)."""
    async with server_api(telephony.url) as lk:
        made = await lk.sip.create_outbound_trunk(
            api.CreateSIPOutboundTrunkRequest(
                trunk=api.SIPOutboundTrunkInfo(
                    name=unique("staff"), address=f"{LIVE_ADDR}:5090", numbers=[TRUNK_NUMBER]
                )
            )
        )
        try:
            yield made.sip_trunk_id
        finally:
            await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=made.sip_trunk_id))


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[ListeningPhone]:
    rate, pcm = synthesize_pcm(HUMAN_LINE, HUMAN_VOICE)
    line = tmp_path / "human-line.pcap"
    line_s = write_rtp_pcap(line, pcm, rate)
    started = ListeningPhone.start(tmp_path, line, line_s=line_s)
    try:
        yield started
    finally:
        started.call.kill()


async def dial(telephony: TelephonyStack, trunk: str, room: str, leg: str) -> None:
    """The ring leg, as a transfer places it: CreateSIPParticipant, until answered."""
    request = api.CreateSIPParticipantRequest(
        sip_trunk_id=trunk,
        sip_call_to=DANA.phone,
        room_name=room,
        participant_identity=leg,
        participant_name=DANA.name,
        wait_until_answered=True,
    )
    request.ringing_timeout.FromSeconds(20)
    async with server_api(telephony.url) as lk:
        await lk.sip.create_sip_participant(request)


async def join_caller(telephony: TelephonyStack, room: str) -> Caller:
    joined = rtc.Room()
    caller = Caller(joined)
    await joined.connect(telephony.url, human_token(room, unique("caller")))
    track = rtc.LocalAudioTrack.create_audio_track("caller", caller.source)
    await joined.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    return caller


async def hand_over(
    telephony: TelephonyStack, trunk: str, caller_room: str, record: Recorder
) -> HumanOnLine:
    consult = f"{caller_room}-consult"
    leg = f"leg_{DANA.id}"
    await dial(telephony, trunk, consult, leg)
    return await asyncio.wait_for(
        warm_hand_over(
            url=telephony.url,
            api_key=API_KEY,
            api_secret=API_SECRET,
            caller_room=caller_room,
            consult_room=consult,
            human=DANA,
            leg_identity=leg,
            briefing=BRIEFING,
            tts=EspeakTTS(voice="alloy", key="support"),
            record=record,
        ),
        WAIT_S,
    )


async def nothing_left(telephony: TelephonyStack, line: HumanOnLine, caller_room: str) -> None:
    """Both rooms left, no task of the bridge running, the server sees neither side."""
    assert line.consult.connection_state == rtc.ConnectionState.CONN_DISCONNECTED
    assert line.caller is not None
    assert line.caller.connection_state == rtc.ConnectionState.CONN_DISCONNECTED
    running = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("bridge:")]
    assert running == []
    ours = ("agent_brief_", "staff_", "leg_")
    async with server_api(telephony.url) as lk:

        async def present() -> list[str]:
            names = []
            for room in (caller_room, f"{caller_room}-consult"):
                try:
                    got = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
                except api.TwirpError:
                    continue
                names += [p.identity for p in got.participants if p.identity.startswith(ours)]
            return names

        async with asyncio.timeout(30):
            while left := await present():
                await asyncio.sleep(0.2)
        assert not left


async def test_briefed_then_on_the_line_both_ways_until_the_human_hangs_up(
    telephony: TelephonyStack, trunk: str, phone: ListeningPhone
):
    """The phone hears the briefing and nobody else in the consult room can; the caller gets
    nothing from staff_dana until the briefing is over, then hears the human's line; the
    human hears the caller; the phone hanging up ends the line as hung_up, with nothing left
    behind."""
    record = Recorder()
    caller_room = unique("bridge")
    caller = await join_caller(telephony, caller_room)
    # someone else in the consult room (a second leg, answered late) subscribes to all it may
    other = rtc.Room()
    subscribed: list[str] = []
    other.on("track_subscribed", lambda _t, _p, who: subscribed.append(who.identity))
    await other.connect(telephony.url, human_token(f"{caller_room}-consult", "other-leg"))
    with RtpTap(phone.media_port) as tap:
        try:
            line = await hand_over(telephony, trunk, caller_room, record)
            # it hears the human's phone, never the briefing: only the human may subscribe
            await until(lambda: "leg_dana" in subscribed, "the other one hears the phone")
            assert not [who for who in subscribed if who.startswith("agent_brief_")]
            briefing, joined = record.one("briefing"), record.one("human_joined")
            assert briefing["completed"] and briefing["chars"] == len(BRIEFING)
            assert briefing["seconds"] > 3, briefing
            assert joined["identity"] == "staff_dana" and joined["at"] >= briefing["at"]
            # the phone heard the briefing: speech on the wire before the human joined the
            # caller's room (nothing of that room can reach the phone before then)
            assert tap.speech_s(before=joined["at"]) > 0.5 * briefing["seconds"], tap.heard[-3:]

            # the caller: no staff_dana before the briefing ended, then the human's line
            await until(lambda: caller.staff_seen_at is not None, "staff_dana in the caller room")
            assert caller.staff_seen_at is not None and caller.staff_seen_at >= briefing["at"]
            assert caller.speech_s() == 0.0 and all(at >= briefing["at"] for at, _ in caller.heard)
            cued = time.time()
            await phone.cue()  # the human speaks
            await until(lambda: caller.speech_s(after=cued) > 0, "the human's line heard")
            first = min(at for at, f in caller.heard if at >= cued and rms(f) > SPEECH_RMS)
            await until(
                lambda: caller.received_s(after=first) >= phone.line_s, "the human's whole line"
            )
            frames = [f for at, f in caller.heard if at >= first - 0.5]
            heard = await asyncio.to_thread(transcribe, frames, HUMAN_LINE)
            assert "how can i help you today" in heard.lower(), heard

            # the human hears the caller
            spoke = await caller.say(CALLER_LINE)
            await until(lambda: tap.speech_s(after=spoke) > 1.5, "the caller heard on the phone")

            # the human hangs up
            await phone.cue()
            reason = await asyncio.wait_for(line.wait_gone(), WAIT_S)
            assert reason == "hung_up"
            await line.close()  # idempotent
            assert await phone.call.result(WAIT_S) == 0, phone.call.output()
        finally:
            await caller.close()
            await other.disconnect()
    left = record.one("human_left")
    assert left["reason"] == "hung_up" and left["talked_s"] > 0
    assert left["frames_to_caller"] > 100 and left["frames_to_human"] > 100, left
    await nothing_left(telephony, line, caller_room)


def transcribe(frames: list[rtc.AudioFrame], line: str) -> str:
    recognizer = SphinxRecognizer()
    grammar = recognizer.grammar_for([line])
    return recognizer.transcribe(to_pcm16k(frames), grammar).text


async def test_the_caller_leaving_hangs_the_human_up(
    telephony: TelephonyStack, trunk: str, phone: ListeningPhone
):
    """The caller leaves while the human is on the line: the line ends as caller_left, the
    bridge hangs the human's phone up (it receives a BYE), and nothing is left behind."""
    record = Recorder()
    caller_room = unique("bridge")
    caller = await join_caller(telephony, caller_room)
    try:
        line = await hand_over(telephony, trunk, caller_room, record)
    finally:
        await caller.close()
    reason = await asyncio.wait_for(line.wait_gone(), WAIT_S)
    assert reason == "caller_left"
    assert await phone.call.result(WAIT_S) == 0, phone.call.output()
    assert record.one("human_left")["reason"] == "caller_left"
    await nothing_left(telephony, line, caller_room)


async def test_hanging_up_during_the_briefing_fails_the_hand_over_before_the_caller_hears(
    telephony: TelephonyStack, trunk: str, phone: ListeningPhone
):
    """The human hangs up while being briefed (the persona takes the caller back): the
    hand-over raises HandOverFailed("hung_up"), staff_dana never joins the caller's room, and
    nothing is left behind."""
    record = Recorder()
    caller_room = unique("bridge")
    caller = await join_caller(telephony, caller_room)
    with RtpTap(phone.media_port) as tap:
        try:
            handing = asyncio.create_task(hand_over(telephony, trunk, caller_room, record))
            await until(lambda: tap.speech_s() > 0.5, "the briefing on the phone")
            await phone.cue()  # speak (into the consult room only)
            await phone.cue()  # and hang up, mid-briefing
            with pytest.raises(HandOverFailed) as failed:
                await asyncio.wait_for(handing, WAIT_S)
            assert failed.value.reason == "hung_up"
            assert await phone.call.result(WAIT_S) == 0, phone.call.output()
        finally:
            await caller.close()
    briefing = record.one("briefing")
    assert not briefing["completed"] and briefing["seconds"] == 0.0
    assert [e["event"] for e in record.events] == ["briefing"]  # no human_joined, no human_left
    assert caller.staff_seen_at is None and caller.heard == []
    running = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("bridge:")]
    assert running == []
    async with server_api(telephony.url) as lk:
        for room in (caller_room, f"{caller_room}-consult"):
            try:
                got = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
            except api.TwirpError:
                continue
            assert not [p.identity for p in got.participants if p.identity.startswith("staff_")]
