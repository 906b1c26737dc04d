"""Every human in the room heard: one listening pipeline per person.

livekit's RoomIO links one participant, so a session hears one human at a time. Here each human
gets an ear of their own: their audio frames go through their own VAD and STT stream (the VAD
cuts the audio into utterances; a streaming STT decodes each as it is spoken, any other is
transcribed when it ends, through livekit's `stt.StreamAdapter`), opened when they start to
publish and closed when they leave. The STT runs only on speech; a silent person costs only VAD,
and once their microphone has been quiet for a second (muted, or nothing above about -60 dBFS)
not even that, until it carries sound again (`SilenceGate`). Each finished utterance is a line
attributed to that person; a person starting to speak is reported at once, so the floor can cut
off a persona who is talking over them.

The ears know nothing of LiveKit: the stage hands each one an async iterator of audio frames
(a subscribed track's `rtc.AudioStream`, or scripted audio in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Callable, Mapping
from typing import Protocol

import numpy as np
from livekit import rtc
from livekit.agents import stt, vad

from config.logging import get_logger

log = get_logger("workers.room.stage.ears")

# A frame whose samples all stay within this (int16; about -60 dBFS) carries no speech: a muted
# or silent microphone. Once the VAD has seen this much of such quiet and is not in speech,
# more of it is not sent to the VAD: it would only spend silero's inference (~3% of a core a
# person, bench.ear_cost) to find nothing. Longer than any pause inside speech, so a line's
# pauses always reach the VAD and the STT whole.
QUIET_PEAK = 32
QUIET_HOLD_S = 1.0


class SilenceGate:
    """Whether a person's next frame goes to their VAD: not once QUIET_HOLD_S of quiet frames
    have passed while the VAD is not in speech (`in_speech`, set from the stream's events);
    the first frame that is not quiet opens it again."""

    def __init__(self) -> None:
        self.in_speech = False
        self.last_sound = 0.0  # wall clock: when the last frame that was not quiet came
        self._quiet_us = 0  # whole microseconds: 100 frames of 10 ms are exactly 1 s

    def passes(self, frame: rtc.AudioFrame) -> bool:
        samples = np.frombuffer(frame.data, dtype=np.int16)
        if samples.size and int(np.abs(samples.astype(np.int32)).max()) > QUIET_PEAK:
            self._quiet_us = 0
            self.last_sound = time.time()
            return True
        self._quiet_us += frame.samples_per_channel * 1_000_000 // max(frame.sample_rate, 1)
        return self.in_speech or self._quiet_us <= QUIET_HOLD_S * 1_000_000


class HeardLine(Protocol):
    """A finished line: who said it, the text, and `heard`: when the ear heard it (wall-clock
    seconds: `sound_end`, when the line's last frame with sound in it reached the ear;
    `speech_end`, the VAD's estimate of the end of speech; `vad_end`, when the VAD said so;
    `final`, when the transcript was ready)."""

    def __call__(self, identity: str, text: str, *, heard: Mapping[str, float]) -> None: ...


StartedSpeaking = Callable[[str], None]  # (identity)


class Ears:
    """One ear per human identity, each its own VAD + STT stream over that person's audio."""

    def __init__(
        self,
        stt_model: stt.STT,
        vad_model: vad.VAD,
        *,
        on_line: HeardLine,
        on_speaking: StartedSpeaking,
    ) -> None:
        # A streaming STT (the offline one, given the VAD) decodes as the person speaks, so
        # the text is ready at the end of speech; any other is wrapped in livekit's adapter,
        # which transcribes each utterance after it ends (as livekit's own stt_node does).
        # One serves every ear: each `stream()` is its own VAD stream and decoder state.
        self._stt: stt.STT = (
            stt_model
            if stt_model.capabilities.streaming
            else stt.StreamAdapter(stt=stt_model, vad=vad_model)
        )
        self._on_line = on_line
        self._on_speaking = on_speaking
        self._ears: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    @property
    def listening(self) -> frozenset[str]:
        return frozenset(i for i, task in self._ears.items() if not task.done())

    def hear(self, identity: str, frames: AsyncIterable[rtc.AudioFrame]) -> None:
        """Listen to `identity` from now on (a new track replaces their previous one)."""
        if self._closed:
            return
        self.forget(identity)
        task = asyncio.get_running_loop().create_task(
            self._listen(identity, frames), name=f"ear-{identity}"
        )
        self._ears[identity] = task

    def forget(self, identity: str) -> None:
        """Stop listening to `identity` (they left, or unpublished their microphone)."""
        task = self._ears.pop(identity, None)
        if task is not None:
            task.cancel()

    async def aclose(self) -> None:
        self._closed = True
        tasks = list(self._ears.values())
        self._ears.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self, identity: str, frames: AsyncIterable[rtc.AudioFrame]) -> None:
        stream = self._stt.stream()

        gate = SilenceGate()

        async def feed() -> None:
            try:
                async for frame in frames:
                    if gate.passes(frame):
                        stream.push_frame(frame)
            finally:
                with contextlib.suppress(RuntimeError):  # the stream was closed meanwhile
                    stream.end_input()

        feeding = asyncio.create_task(feed(), name=f"ear-feed-{identity}")
        heard: dict[str, float] = {}
        try:
            async for event in stream:
                if event.type == stt.SpeechEventType.START_OF_SPEECH:
                    gate.in_speech = True
                    self._on_speaking(identity)
                elif event.type == stt.SpeechEventType.END_OF_SPEECH:
                    gate.in_speech = False
                    heard = {"vad_end": round(time.time(), 3)}
                    if gate.last_sound:
                        heard["sound_end"] = round(gate.last_sound, 3)
                    if event.speech_end_time is not None:
                        heard["speech_end"] = round(event.speech_end_time, 3)
                elif event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                    text = event.alternatives[0].text.strip() if event.alternatives else ""
                    if text:
                        heard["final"] = round(time.time(), 3)
                        self._on_line(identity, text, heard=heard)
                    heard = {}
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one person's broken audio must not end the room
            log.warning("ear_failed", identity=identity, error=repr(e))
        finally:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeding
            await stream.aclose()
