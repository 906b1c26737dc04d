"""The warm hand-over's room logic on the live suite's server, with Python-SDK participants
only (no telephony stack): the leg is a participant whose `sip.callStatus` attribute says what
livekit-sip would (all the bridge reads of a leg). Cheaper than tests/live/test_bridge.py,
for what does not need a real phone: a leg that never becomes active or never listens fails
the hand-over and is hung up; the human hears the callers, never the personas."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

import numpy as np
import pytest
from livekit import api, rtc

from agents.espeak_tts import EspeakTTS
from config.humans import HumanAgent
from tests.live import harness
from tests.live.harness import API_KEY, API_SECRET, URL, unique
from workers.humans import bridge
from workers.humans.bridge import HandOverFailed, warm_hand_over

pytestmark = [pytest.mark.live, pytest.mark.filterwarnings("ignore:The HMAC key is")]

WAIT_S = 60
LOUD = 2000.0  # frame RMS of the test tones (~8000) once through Opus, well above silence
SAM = HumanAgent(id="sam", tenant="brightcart", name="Sam Lee", phone="+15550100556")


def token(
    room: str,
    identity: str,
    attributes: dict[str, str] | None = None,
    kind: Literal["standard", "agent"] = "standard",
) -> str:
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
    return (
        api.AccessToken(API_KEY, API_SECRET)
        .with_identity(identity)
        .with_kind(kind)
        .with_attributes(attributes or {})
        .with_grants(grants)
        .to_jwt()
    )


class Party:
    """One participant: a track it can play a tone on, the loud frames it hears by sender."""

    def __init__(self) -> None:
        self.room = rtc.Room()
        self.source = rtc.AudioSource(48_000, 1)
        self.loud: dict[str, float] = {}  # sender identity -> seconds of loud audio heard
        self.heard: dict[str, float] = {}  # sender identity -> seconds of any audio heard
        self._tasks: set[asyncio.Task[None]] = set()
        self.room.on("track_subscribed", self._subscribed)

    async def join(self, room: str, jwt: str, *, subscribe: bool = True) -> Party:
        await self.room.connect(URL, jwt, rtc.RoomOptions(auto_subscribe=subscribe))
        track = rtc.LocalAudioTrack.create_audio_track("voice", self.source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        return self

    def _subscribed(self, track: rtc.Track, _pub: Any, who: rtc.RemoteParticipant) -> None:
        self._spawn(self._listen(track, who.identity))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)

    async def _listen(self, track: rtc.Track, identity: str) -> None:
        async for event in rtc.AudioStream(track, sample_rate=48_000, num_channels=1):
            f = event.frame
            samples = np.frombuffer(f.data, dtype=np.int16).astype(np.float64)
            self.heard[identity] = self.heard.get(identity, 0.0) + f.duration
            if len(samples) and float(np.sqrt(np.mean(samples**2))) > LOUD:
                self.loud[identity] = self.loud.get(identity, 0.0) + f.duration

    def tone(self, seconds: float | None) -> None:
        """Play a 440 Hz tone: for `seconds`, or until close() (None)."""
        self._spawn(self._tone(seconds))

    async def _tone(self, seconds: float | None) -> None:
        n = 960  # 20 ms
        t = np.arange(n) / 48_000
        pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).tobytes()
        played = 0.0
        while seconds is None or played < seconds:
            await self.source.capture_frame(rtc.AudioFrame(pcm, 48_000, 1, n))
            played += 0.02

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.room.disconnect()


@contextlib.asynccontextmanager
async def parties() -> AsyncIterator[list[Party]]:
    made: list[Party] = []
    try:
        yield made
    finally:
        for party in made:
            await party.close()


async def until(holds: Any, what: str, timeout: float = WAIT_S) -> None:
    await harness.until(holds, what, timeout)


def hand_over(caller_room: str, leg: str, record: Any) -> Any:
    return warm_hand_over(
        url=URL,
        api_key=API_KEY,
        api_secret=API_SECRET,
        caller_room=caller_room,
        consult_room=f"{caller_room}-consult",
        human=SAM,
        leg_identity=leg,
        briefing="Quick one: Jamie needs a new jar.",
        tts=EspeakTTS(voice="alloy"),
        record=record,
    )


def removed(party: Party) -> bool:
    return party.room.connection_state == rtc.ConnectionState.CONN_DISCONNECTED


@pytest.mark.parametrize(
    ("status", "subscribes", "reason"),
    [("ringing", True, "not_active"), ("active", False, "not_listening")],
)
async def test_a_leg_not_active_or_not_listening_fails_the_hand_over_and_is_hung_up(
    monkeypatch: pytest.MonkeyPatch, status: str, subscribes: bool, reason: str
):
    monkeypatch.setattr(bridge, "LEG_ACTIVE_TIMEOUT_S", 3.0)
    monkeypatch.setattr(bridge, "LISTENING_TIMEOUT_S", 3.0)
    caller_room = unique("bridge")
    consult = f"{caller_room}-consult"
    recorded: list[str] = []
    async with parties() as made:
        leg = await Party().join(
            consult, token(consult, "leg_sam", {"sip.callStatus": status}), subscribe=subscribes
        )
        made.append(leg)
        with pytest.raises(HandOverFailed) as failed:
            await asyncio.wait_for(
                hand_over(caller_room, "leg_sam", lambda e, **_: recorded.append(e)), WAIT_S
            )
        assert failed.value.reason == reason
        await until(lambda: removed(leg), "the leg hung up")
    assert recorded == []
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("bridge:")]


async def test_the_human_hears_the_callers_never_the_personas():
    """A persona (kind agent) plays a tone in the caller's room the whole time: the phone
    hears none of it. The caller plays one: the phone hears it. close() ends the line as
    closed and hangs the leg up."""
    caller_room = unique("bridge")
    consult = f"{caller_room}-consult"
    events: list[tuple[str, dict[str, Any]]] = []
    async with parties() as made:
        leg = await Party().join(consult, token(consult, "leg_sam", {"sip.callStatus": "active"}))
        caller = await Party().join(caller_room, token(caller_room, unique("caller")))
        persona = await Party().join(
            caller_room, token(caller_room, "agent_support_x", {"role": "support"}, kind="agent")
        )
        made += [leg, caller, persona]
        persona.tone(None)
        line = await asyncio.wait_for(
            hand_over(caller_room, "leg_sam", lambda e, **f: events.append((e, f))), WAIT_S
        )
        try:
            staff = f"agent_brief_{consult}"
            joined = leg.heard.get(staff, 0.0)
            # once the briefing's tail has arrived, 2 s more of the relay: none of it loud
            await until(lambda: leg.heard.get(staff, 0.0) > joined + 1, "the briefing's tail")
            loud_at_join = leg.loud.get(staff, 0.0)
            await until(lambda: leg.heard.get(staff, 0.0) > joined + 3, "3 s relayed")
            assert leg.loud.get(staff, 0.0) == loud_at_join  # the persona's tone: not relayed
            assert caller.loud.get(SAM.identity, 0.0) == 0.0  # and the leg is silent
            caller.tone(1.0)
            await until(
                lambda: leg.loud.get(staff, 0.0) > loud_at_join + 0.5, "the caller on the phone"
            )
        finally:
            await line.close()
        assert line.reason == "closed"
        await until(lambda: removed(leg), "the leg hung up")
    names = [e for e, _ in events]
    assert names == ["briefing", "human_joined", "human_left"]
    assert events[-1][1]["reason"] == "closed" and events[-1][1]["frames_to_human"] > 100
