"""The warm hand-over's pieces that need no server: the two tokens, whose voices the human
hears, the caller-room mix and the relay pump on scripted frames, the briefing spoken into
a real audio source, and a hand-over that cannot reach its server leaving nothing behind.
The rooms themselves are in tests/live/test_bridge.py (real server, livekit-sip, SIPp)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
from livekit import api, rtc
from livekit.api.access_token import Claims

from agents.espeak_tts import EspeakTTS, espeak_voice_for, synthesize_pcm
from config.humans import HumanAgent
from workers.humans import relay
from workers.humans.bridge import (
    HandOverFailed,
    HumanOnLine,
    briefer_token,
    hears,
    staff_token,
    warm_hand_over,
)
from workers.tokens import check_human_identity

KEY, SECRET = "devkey", "a-secret-long-enough-for-hs256-signing"
DANA = HumanAgent(id="dana", tenant="brightcart", name="Dana Reyes", phone="+15550100555")


def claims(token: str) -> Claims:
    return api.TokenVerifier(KEY, SECRET).verify(token)


def test_the_briefer_is_an_agent_of_the_consult_room_that_hears_the_leg():
    got = claims(briefer_token(api_key=KEY, api_secret=SECRET, room="call-1-consult", human=DANA))
    assert got.identity == "agent_brief_call-1-consult"
    assert got.kind == "agent"
    assert got.attributes == {"role": "briefing", "human_agent": "dana"}
    assert got.video is not None and got.video.room == "call-1-consult"
    assert got.video.can_subscribe and got.video.can_publish
    assert got.video.can_publish_sources == ["microphone"]


def test_the_human_joins_the_callers_room_as_staff_a_standard_participant():
    got = claims(staff_token(api_key=KEY, api_secret=SECRET, room="call-1", human=DANA))
    assert got.identity == "staff_dana" and got.name == "Dana Reyes"
    assert got.kind in ("", "standard")
    assert got.attributes == {"role": "human_agent", "human_agent": "dana"}
    assert got.video is not None and got.video.room == "call-1"
    assert got.video.can_subscribe and got.video.can_publish
    assert got.video.can_publish_sources == ["microphone"]
    assert not got.video.can_publish_data and not got.video.hidden
    # and no caller token can take that identity
    with pytest.raises(ValueError, match="staff"):
        check_human_identity(got.identity)


def test_the_human_hears_callers_and_phones_not_personas():
    kinds = rtc.ParticipantKind
    for kind, heard in (
        (kinds.PARTICIPANT_KIND_STANDARD, True),
        (kinds.PARTICIPANT_KIND_SIP, True),
        (kinds.PARTICIPANT_KIND_AGENT, False),
    ):
        assert hears(cast(Any, SimpleNamespace(kind=kind))) is heard


# -- the relay on scripted frames --------------------------------------------------------------


def frame(value: int) -> rtc.AudioFrame:
    samples = np.full(relay.FRAME_SAMPLES, value, dtype=np.int16)
    return rtc.AudioFrame(samples.tobytes(), relay.RATE, relay.CHANNELS, relay.FRAME_SAMPLES)


def level(f: rtc.AudioFrame) -> set[int]:
    return set(np.frombuffer(f.data, dtype=np.int16).tolist())


async def frames(value: int, n: int) -> AsyncIterator[rtc.AudioFrame]:
    for _ in range(n):
        yield frame(value)


class Stalled:
    """A track that gives nothing (a caller whose audio stopped arriving)."""

    def __aiter__(self) -> Stalled:
        return self

    async def __anext__(self) -> rtc.AudioFrame:
        await asyncio.Event().wait()
        raise StopAsyncIteration


class Sink:
    def __init__(self, queued_duration: float = 0.0) -> None:
        self.got: list[rtc.AudioFrame] = []
        self.queued_duration = queued_duration
        self._more = asyncio.Event()

    async def capture_frame(self, f: rtc.AudioFrame) -> None:
        self.got.append(f)
        self._more.set()

    async def holds(self, n: int) -> None:
        """Until `n` frames have come in (bounded)."""
        async with asyncio.timeout(10):
            while len(self.got) < n:
                self._more.clear()
                await self._more.wait()


async def test_the_mix_sums_the_callers_in_20_ms_frames_and_drops_one_removed():
    mix = relay.Mix()
    sink, count = Sink(), list[int]()
    pumping = asyncio.create_task(pump_into(mix, sink, count))
    try:
        mix.add("caller", frames(1000, 10_000))
        mix.add("second", frames(200, 5))
        await sink.holds(5)
        assert all(f.samples_per_channel == relay.FRAME_SAMPLES for f in sink.got)
        assert all(f.sample_rate == relay.RATE for f in sink.got)
        assert level(sink.got[0]) == {1200}  # both voices, summed
        assert sorted(mix.inputs) == ["caller", "second"]
        mix.remove("second")
        seen = len(sink.got)
        await sink.holds(seen + 5)
        assert level(sink.got[-1]) == {1000}  # the one left
        assert len(count) == len(sink.got)
    finally:
        pumping.cancel()
        await asyncio.gather(pumping, return_exceptions=True)
        await mix.aclose()


async def pump_into(mix: relay.Mix, sink: Sink, count: list[int]) -> None:
    await relay.pump(aiter(mix), sink, lambda: count.append(1))


async def test_a_stalled_caller_does_not_hold_up_the_others():
    mix = relay.Mix()
    sink: Sink = Sink()
    pumping = asyncio.create_task(pump_into(mix, sink, []))
    try:
        mix.add("stalled", Stalled())
        mix.add("talking", frames(700, 20))
        await sink.holds(20)  # each round waits one frame for the stalled one at most
        assert all(level(f) == {700} for f in sink.got[:20])
    finally:
        pumping.cancel()
        await asyncio.gather(pumping, return_exceptions=True)
        await mix.aclose()


async def test_the_pump_forwards_every_frame_in_order_and_counts_them():
    sink, count = Sink(), list[int]()
    await relay.pump(frames_counting(7), sink, lambda: count.append(1))
    assert [level(f) for f in sink.got] == [{i} for i in range(7)]
    assert len(count) == 7


async def test_a_backlog_in_the_sending_source_is_dropped_not_kept_as_delay():
    sink, sent, dropped = Sink(queued_duration=1.0), list[int](), list[int]()
    await relay.pump(frames_counting(3), sink, lambda: sent.append(1), lambda: dropped.append(1))
    assert sink.got == [] and sent == [] and len(dropped) == 3
    sink.queued_duration = relay.MAX_BACKLOG_S
    await relay.pump(frames_counting(3), sink, lambda: sent.append(1), lambda: dropped.append(1))
    assert len(sink.got) == 3 and len(sent) == 3 and len(dropped) == 3


async def frames_counting(n: int) -> AsyncIterator[rtc.AudioFrame]:
    for i in range(n):
        yield frame(i)


async def test_the_briefing_is_spoken_whole_at_the_relays_rate():
    """eSpeak speaks at 22050 Hz; the source the phone hears runs at 48 kHz: the briefing is
    resampled once and played out in full before speak() returns."""
    text = "Jamie, order one two three four, cracked jar."
    engine = EspeakTTS(voice="alloy", key="support")
    rate, pcm = synthesize_pcm(text, espeak_voice_for("alloy", "support"))
    captured: list[rtc.AudioFrame] = []
    source = relay.relay_source()

    class Watched:
        sample_rate = source.sample_rate
        queued_duration = 0.0

        async def capture_frame(self, f: rtc.AudioFrame) -> None:
            captured.append(f)
            await source.capture_frame(f)

        async def wait_for_playout(self) -> None:
            await source.wait_for_playout()

    try:
        seconds = await asyncio.wait_for(relay.speak(engine, text, cast(Any, Watched())), 60)
    finally:
        await source.aclose()
        await engine.aclose()
    assert {f.sample_rate for f in captured} == {relay.RATE}
    assert seconds == pytest.approx(len(pcm) / 2 / rate, abs=0.05)
    assert source.queued_duration == 0.0


async def test_a_hand_over_that_cannot_reach_its_server_leaves_nothing_behind():
    recorded: list[str] = []
    before = set(asyncio.all_tasks())
    with pytest.raises(HandOverFailed) as failed:
        await warm_hand_over(
            url="ws://127.0.0.1:9",  # discard port: nothing listens
            api_key=KEY,
            api_secret=SECRET,
            caller_room="call-1",
            consult_room="call-1-consult",
            human=DANA,
            leg_identity="leg_dana",
            briefing="Jamie needs a new jar.",
            tts=EspeakTTS(voice="alloy"),
            record=lambda event, **_: recorded.append(event),
        )
    assert failed.value.reason == "unreachable"
    left = [t.get_name() for t in set(asyncio.all_tasks()) - before if not t.done()]
    assert not [name for name in left if name.startswith("bridge:")]
    assert recorded == []  # never briefed, never joined: no briefing, human_joined, human_left


async def test_closing_a_line_twice_ends_it_once_as_closed():
    recorded: list[tuple[str, dict[str, Any]]] = []
    hung_up: list[int] = []

    async def hang_up() -> None:
        hung_up.append(1)

    line = HumanOnLine(
        human=DANA,
        leg_identity="leg_dana",
        consult_room="call-1-consult",
        record=lambda event, **fields: recorded.append((event, fields)),
        hang_up=hang_up,
    )
    await line.close()
    await line.close()
    assert await line.wait_gone() == "closed"
    assert line.reason == "closed" and line.talked_s == 0.0
    assert hung_up == []  # no leg in a room it never joined: nothing to hang up
    assert recorded == []  # never on the line: no human_left
