"""Every human heard (workers/room/stage/ears.py): each person's own VAD + STT stream over
their own audio. Real audio end to end with no network: each person speaks an eSpeak line in
a voice of their own, silero's VAD cuts it, the offline STT (pocketsphinx with the scenario's
expected lines) transcribes it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping

import pytest
from livekit import rtc
from livekit.agents.vad import VAD
from livekit.plugins import silero

from agents.espeak_tts import espeak_voice_for, synthesize_pcm
from agents.sphinx_stt import SphinxSTT
from workers.room.stage.ears import QUIET_HOLD_S, Ears, SilenceGate

pytestmark = pytest.mark.integration
FRAME_MS = 10
LINES = (
    "Hi, my blender arrived with a cracked jar. Order 88123.",
    "Yes please, I have photos of it.",
    "That's all, thank you.",
)


def frames_of(pcm: bytes, rate: int) -> list[rtc.AudioFrame]:
    step = rate * FRAME_MS // 1000 * 2
    return [
        rtc.AudioFrame(pcm[i : i + step], rate, 1, step // 2)
        for i in range(0, len(pcm) - step + 1, step)
    ]


def spoken(text: str, who: str) -> list[rtc.AudioFrame]:
    """`text` in `who`'s own eSpeak voice, then 1.5 s of silence (the VAD's end of speech)."""
    rate, pcm = synthesize_pcm(text, espeak_voice_for(who, key=who))
    return frames_of(pcm + b"\x00\x00" * int(rate * 1.5), rate)


def silence(seconds: float, rate: int = 22050) -> list[rtc.AudioFrame]:
    return frames_of(b"\x00\x00" * int(rate * seconds), rate)


async def mic(
    *parts: Iterable[rtc.AudioFrame], after: asyncio.Event | None = None
) -> AsyncIterator[rtc.AudioFrame]:
    """A person's microphone: their frames in order (optionally only once `after` is set),
    yielding to the loop between frames as a live track would."""
    if after is not None:
        await after.wait()
    for part in parts:
        for frame in part:
            yield frame
            await asyncio.sleep(0)


class Heard:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []
        self.heard: list[dict[str, float]] = []
        self.speaking: list[str] = []
        self.changed = asyncio.Event()
        self._after: dict[int, asyncio.Event] = {}

    def line(self, identity: str, text: str, *, heard: Mapping[str, float]) -> None:
        self.lines.append((identity, text))
        self.heard.append(dict(heard))
        self.changed.set()
        self.after(len(self.lines)).set()

    def after(self, count: int) -> asyncio.Event:
        """Set once `count` lines have been heard."""
        return self._after.setdefault(count, asyncio.Event())

    def started(self, identity: str) -> None:
        self.speaking.append(identity)
        self.changed.set()

    async def until(self, count: int) -> None:
        while len(self.lines) < count:
            self.changed.clear()
            await self.changed.wait()


class CountingSphinx(SphinxSTT):
    """The offline STT, counting the utterances it transcribed whole after their end
    (`recognised`) and those it decoded as they were spoken (`streamed`)."""

    recognised = 0
    streamed = 0

    async def _recognize_impl(self, *args, **kwargs):
        self.recognised += 1
        return await super()._recognize_impl(*args, **kwargs)

    def open_utterance(self):
        self.streamed += 1
        return super().open_utterance()


@pytest.fixture(scope="module")
def vad() -> VAD:
    return silero.VAD.load()


def ears_for(heard: Heard, vad: VAD, *, streaming: bool = False) -> Ears:
    stt = SphinxSTT(phrases=LINES, vad=vad if streaming else None)
    return Ears(stt, vad, on_line=heard.line, on_speaking=heard.started)


@pytest.mark.parametrize("streaming", [False, True], ids=["after_the_end", "streaming"])
async def test_two_people_speaking_at_once_are_both_heard_each_as_themselves(vad, streaming):
    heard = Heard()
    ears = ears_for(heard, vad, streaming=streaming)
    ears.hear("jamie", mic(spoken(LINES[0], "jamie")))
    ears.hear("sam", mic(silence(0.3), spoken(LINES[1], "sam")))
    try:
        async with asyncio.timeout(90):
            await heard.until(2)
    finally:
        await ears.aclose()
    assert sorted(heard.lines) == [("jamie", LINES[0]), ("sam", LINES[1])]
    assert sorted(set(heard.speaking)) == ["jamie", "sam"]
    for times in heard.heard:  # when each line was heard, in order, for the transcript
        assert times["speech_end"] <= times["vad_end"] <= times["final"], times
        assert times["sound_end"] <= times["vad_end"], times  # the last sound came first


async def test_three_people_in_turn_are_heard_in_the_order_they_finished(vad):
    heard = Heard()
    ears = ears_for(heard, vad)
    ears.hear("jamie", mic(spoken(LINES[0], "jamie")))
    ears.hear("sam", mic(spoken(LINES[1], "sam"), after=heard.after(1)))
    ears.hear("lee", mic(spoken(LINES[2], "lee"), after=heard.after(2)))
    try:
        async with asyncio.timeout(120):
            await heard.until(3)
    finally:
        await ears.aclose()
    assert heard.lines == [("jamie", LINES[0]), ("sam", LINES[1]), ("lee", LINES[2])]


async def test_a_silent_person_costs_no_transcription_and_a_person_who_leaves_is_forgotten(vad):
    heard = Heard()
    stt = CountingSphinx(phrases=LINES)
    ears = Ears(stt, vad, on_line=heard.line, on_speaking=heard.started)
    ears.hear("quiet", mic(silence(3.0)))
    ears.hear("jamie", mic(spoken(LINES[2], "jamie")))
    try:
        async with asyncio.timeout(90):
            await heard.until(1)
        assert heard.lines == [("jamie", LINES[2])]
        assert stt.recognised == 1  # only the speaking person's utterance was transcribed
        assert stt.streamed == 0
        assert "quiet" not in heard.speaking
        ears.forget("jamie")
        assert "jamie" not in ears.listening
    finally:
        await ears.aclose()
    assert not ears.listening


async def test_a_streaming_stt_decodes_as_people_speak_and_a_silent_person_costs_no_decoding(vad):
    """The offline STT given the VAD streams: each ear decodes its person's speech as it
    arrives (one utterance opened per line, nothing transcribed after the end), and a silent
    person's ear opens none."""
    heard = Heard()
    stt = CountingSphinx(phrases=LINES, vad=vad)
    ears = Ears(stt, vad, on_line=heard.line, on_speaking=heard.started)
    ears.hear("quiet", mic(silence(3.0)))
    ears.hear("jamie", mic(spoken(LINES[0], "jamie")))
    ears.hear("sam", mic(spoken(LINES[2], "sam"), after=heard.after(1)))
    try:
        async with asyncio.timeout(90):
            await heard.until(2)
    finally:
        await ears.aclose()
    assert heard.lines == [("jamie", LINES[0]), ("sam", LINES[2])]
    assert (stt.streamed, stt.recognised) == (2, 0)
    assert "quiet" not in heard.speaking


def test_the_silence_gate_spares_the_vad_a_quiet_microphone_but_never_a_pause_in_speech():
    """A microphone quiet for more than QUIET_HOLD_S, while the VAD is not in speech, is not
    sent to the VAD; any sound opens it at once; during speech every frame goes through."""
    gate = SilenceGate()
    quiet = rtc.AudioFrame(b"\x05\x00" * 160, 16000, 1, 160)  # 10 ms at peak 5
    loud = rtc.AudioFrame(b"\x00\x10" * 160, 16000, 1, 160)  # peak 4096
    hold = round(QUIET_HOLD_S / 0.01)
    assert gate.passes(loud)
    assert all(gate.passes(quiet) for _ in range(hold))  # a pause: the VAD sees it whole
    assert not any(gate.passes(quiet) for _ in range(50))  # then quiet: spared
    assert gate.passes(loud)  # sound again: through at once
    gate.in_speech = True  # the VAD is in speech: its end needs every quiet frame
    assert all(gate.passes(quiet) for _ in range(3 * hold))
    gate.in_speech = False
    assert not gate.passes(quiet)
