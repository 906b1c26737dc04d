"""The offline ear streams (agents/sphinx_stt.py, SphinxStream): real eSpeak speech, the real
silero VAD and pocketsphinx. Each piece of speech is decoded as it arrives, so the final follows
the end of speech without a decode of the whole utterance after it."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from livekit import rtc
from livekit.agents import stt as lk_stt
from livekit.agents.vad import VAD

from agents.espeak_tts import HUMAN_VOICE, espeak_voice_for, synthesize_pcm
from agents.models import load_vad
from agents.sphinx_stt import SphinxRecognizer, SphinxSTT
from config.scenario import load_scenario
from tests.conftest import SCENARIOS_DIR

pytestmark = pytest.mark.integration

Kind = lk_stt.SpeechEventType


@pytest.fixture(scope="module")
def vad() -> VAD:
    return load_vad(offline=True)  # a keyless worker's: the offline ear's


@pytest.fixture(scope="module")
def lines() -> tuple[str, ...]:
    return tuple(load_scenario(SCENARIOS_DIR / "inbound_support.json").human_lines)


def frames_of(pcm: bytes, rate: int, ms: int = 10) -> list[rtc.AudioFrame]:
    n = rate * ms // 1000
    samples = len(pcm) // 2
    return [
        rtc.AudioFrame(pcm[2 * i : 2 * (i + n)], rate, 1, min(n, samples - i))
        for i in range(0, samples, n)
    ]


def silence(rate: int, seconds: float) -> list[rtc.AudioFrame]:
    return frames_of(bytes(2 * int(rate * seconds)), rate)


async def _wait_for(condition) -> None:
    """Poll `condition` until it holds, for at most 5 minutes (a hang guard, not a timing: on
    this shared 2-core machine at load 30 three lines took over a minute to decode)."""
    async with asyncio.timeout(300):
        # polled: the decoder's progress is counted on its worker thread, with no event
        for _ in itertools.count():
            if condition():
                return
            await asyncio.sleep(0.01)


async def test_the_final_follows_the_end_of_speech_without_decoding_the_utterance_again(vad, lines):
    line = lines[0]  # ~5 s of speech
    rate, pcm = synthesize_pcm(line, HUMAN_VOICE)
    speech_s = len(pcm) / 2 / rate
    stt = SphinxSTT(phrases=lines, vad=vad, recognizer=SphinxRecognizer())
    assert stt.capabilities.streaming
    started = time.perf_counter()
    whole = await stt.recognize(rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2))
    whole_decode_s = time.perf_counter() - started  # what StreamAdapter pays after the end
    assert whole.alternatives[0].text == line

    events: list[tuple[float, lk_stt.SpeechEvent]] = []
    decoded_at: list[float] = []  # speech through the decoders when each event arrived
    async with stt.stream() as stream:

        async def collect() -> None:
            async for ev in stream:
                events.append((time.perf_counter(), ev))
                decoded_at.append(stream.decoded_s)  # type: ignore[attr-defined]

        reader = asyncio.create_task(collect())
        for frame in [*silence(rate, 0.5), *frames_of(pcm, rate)]:
            stream.push_frame(frame)
        # as in real time, the decoder keeps up with the speaker, through the start of the
        # silence that ends the speech (shorter than the VAD's end-of-speech silence)
        for frame in silence(rate, 0.3):
            stream.push_frame(frame)
        await _wait_for(lambda: stream.decoded_s >= speech_s + 0.3)  # type: ignore[attr-defined]
        for frame in silence(rate, 1.2):
            stream.push_frame(frame)
        await _wait_for(lambda: any(ev.type == Kind.FINAL_TRANSCRIPT for _, ev in events))
        stream.end_input()
        await reader

    kinds = [ev.type for _, ev in events]
    assert kinds == [Kind.START_OF_SPEECH, Kind.END_OF_SPEECH, Kind.FINAL_TRANSCRIPT]
    final = events[2][1].alternatives[0]
    assert final.text == line and final.metadata == {"source": "grammar"}
    # after the end of speech the decoders took in at most what was still queued for them (the
    # VAD's silence and its smoothing, under 1 s), never the utterance again (~5 s)
    assert decoded_at[2] - decoded_at[1] < 1.0 < speech_s / 4, (decoded_at, speech_s)
    end_to_final = events[2][0] - events[1][0]
    # measured at load 20: 0.43-0.67 s, against 2.0-2.8 s for a whole-utterance decode
    assert end_to_final < 0.5 * whole_decode_s, (end_to_final, whole_decode_s)


@pytest.mark.parametrize(
    ("scenario", "voice"),
    [
        ("inbound_support", HUMAN_VOICE),
        ("sales_support_handoff", espeak_voice_for("echo", "chris")),
    ],
)
async def test_each_line_streamed_in_turn_is_heard_whole_and_exactly(vad, scenario, voice):
    """One stream, the lines one after another with pauses, as a caller says them: the VAD's
    end-of-speech silence is longer than any pause inside a line (one final per line)."""
    lines = load_scenario(SCENARIOS_DIR / f"{scenario}.json").human_lines
    stt = SphinxSTT(phrases=lines, vad=vad, recognizer=SphinxRecognizer())
    heard: list[str] = []
    async with stt.stream() as stream:

        async def collect() -> None:
            async for ev in stream:
                if ev.type == Kind.FINAL_TRANSCRIPT:
                    heard.append(ev.alternatives[0].text)

        reader = asyncio.create_task(collect())
        for line in lines:
            rate, pcm = synthesize_pcm(line, voice)
            for frame in [*silence(rate, 0.5), *frames_of(pcm, rate), *silence(rate, 1.5)]:
                stream.push_frame(frame)
        await _wait_for(lambda: len(heard) >= len(lines))
        stream.end_input()
        await reader
    assert heard == list(lines)


async def test_a_stream_closed_mid_speech_frees_the_decoders(vad, lines):
    recognizer = SphinxRecognizer()
    stt = SphinxSTT(phrases=lines, vad=vad, recognizer=recognizer)
    rate, pcm = synthesize_pcm(lines[1], HUMAN_VOICE)
    stream = stt.stream()
    for frame in [*silence(rate, 0.5), *frames_of(pcm, rate)]:
        stream.push_frame(frame)
    await _wait_for(lambda: stream.decoded_s > 0.5)
    await stream.aclose()
    # the next utterance (another room's, or this one's next) is decoded at once
    heard = await asyncio.wait_for(
        asyncio.to_thread(recognizer.transcribe, b"\x01\x00" * 16_000), timeout=30
    )
    assert heard.source == "none"
