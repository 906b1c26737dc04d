"""The offline ear's end of speech (agents/models.py `load_vad(offline=True)`): real eSpeak
lines through the real silero VAD, 16 kHz 10 ms frames as the ear gets them. Counted in the
audio's own time (the VAD's sample index), never the wall clock: the same lines always give the
same windows. Each line is one piece of speech (never split at a pause inside it), and its end
is found soon after its last sound."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from livekit import rtc
from livekit.agents.vad import VAD, VADEventType

from agents.espeak_tts import HUMAN_VOICE, EspeakVoice, espeak_voice_for, synthesize_pcm
from agents.models import load_vad
from agents.sphinx_stt import SAMPLE_RATE, to_pcm16k
from config.scenario import load_scenario
from tests.conftest import SCENARIOS_DIR

pytestmark = pytest.mark.integration

SILENT_PEAK = 64  # |sample| at or below this is silence (eSpeak pads its lines with zeros)
# The humans' voices of the tests and benches: the scripted human, and callers
VOICES = {
    "human": HUMAN_VOICE,
    "chris": espeak_voice_for("echo", "chris"),
    "caller": espeak_voice_for("fable", "caller"),
    "ben": espeak_voice_for("onyx", "caller"),
}
CALLER_LINES = (  # some of bench.answer_latency's lines (the rest are alike)
    "Hi, my blender arrived with a cracked jar.",
    "The order number is eight eight one two three.",
    "Yes, I have photos of it.",
    "Can you send a new jar instead?",
    "How long will the replacement take?",
    "The lid is fine, only the jar cracked.",
    "Thank you, that helps a lot.",
    "That's all, thank you.",
)


def human_lines() -> list[str]:
    lines: list[str] = []
    for path in sorted(SCENARIOS_DIR.glob("*.json")):
        if path.name != "schema.json":
            lines += load_scenario(path).human_lines
    return lines


async def speech_of(vad: VAD, text: str, voice: EspeakVoice) -> tuple[list[float], float]:
    """(the VAD's ends of speech, the line's last sound), seconds into the audio: the line
    after 0.5 s of silence, then 1.5 s of silence."""
    rate, pcm = synthesize_pcm(text, voice)
    line = np.frombuffer(to_pcm16k(rtc.AudioFrame(pcm, rate, 1, len(pcm) // 2)), np.int16)
    lead = np.zeros(SAMPLE_RATE // 2, np.int16)
    audio = np.concatenate([lead, line, np.zeros(3 * SAMPLE_RATE // 2, np.int16)])
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > SILENT_PEAK)
    last_sound = (loud[-1] + 1) / SAMPLE_RATE
    step = SAMPLE_RATE // 100
    stream = vad.stream()
    for i in range(0, len(audio) - step + 1, step):
        stream.push_frame(rtc.AudioFrame(audio[i : i + step].tobytes(), SAMPLE_RATE, 1, step))
    stream.end_input()
    ends = [
        ev.samples_index / SAMPLE_RATE
        async for ev in stream
        if ev.type == VADEventType.END_OF_SPEECH
    ]
    await stream.aclose()
    return ends, last_sound


@pytest.fixture(scope="module")
def vad() -> VAD:
    return load_vad(offline=True)  # a keyless worker's


@pytest.mark.parametrize("voice", sorted(VOICES))
async def test_no_line_of_a_scenario_is_split_at_a_pause_inside_it(vad, voice):
    """Every human line of every scenario is one piece of speech, in each human voice."""
    for text in human_lines():
        ends, _ = await speech_of(vad, text, VOICES[voice])
        assert len(ends) == 1, (voice, text, ends)


async def test_the_offline_ear_ends_a_line_soon_after_its_last_sound(vad):
    """Measured: 0.43 s after the last sound (p50; max 0.51), where livekit's deactivation
    threshold with the keyed worker's 0.45 s of silence took 0.55 s (max 0.62)."""
    after: list[float] = []
    for text in CALLER_LINES:
        ends, last_sound = await speech_of(vad, text, VOICES["caller"])
        assert len(ends) == 1, (text, ends)
        after.append(ends[0] - last_sound)
    assert statistics.median(after) <= 0.47 and max(after) <= 0.53, after
    # never before the silence the VAD waits for: the line's last word is not cut off
    assert min(after) >= 0.3, after
