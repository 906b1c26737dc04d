"""Every human in the room heard: one listening pipeline per person.

livekit's RoomIO links one participant, so a session hears one human at a time. Here each
human gets an ear of their own: their audio frames go through their own VAD and STT stream
(livekit's `stt.StreamAdapter`: the VAD cuts the audio into utterances and the STT transcribes
each one), opened when they start to publish and closed when they leave. A silent person
costs only VAD; the STT runs only on speech. Each finished utterance is a line attributed to
that person; a person starting to speak is reported at once, so the floor can cut off a
persona who is talking over them.

The ears know nothing of LiveKit: the stage hands each one an async iterator of audio frames
(a subscribed track's `rtc.AudioStream`, or scripted audio in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, Callable
from typing import Protocol

from livekit import rtc
from livekit.agents import stt, vad

from config.logging import get_logger

log = get_logger("workers.room.stage.ears")


class HeardLine(Protocol):
    def __call__(self, identity: str, text: str, *, eou_delay_s: float | None = None) -> None:
        """A person's finished line; `eou_delay_s`: end of their speech -> final transcript."""


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
        # one adapter serves every ear: each `stream()` is its own VAD stream and buffer
        self._adapter = stt.StreamAdapter(stt=stt_model, vad=vad_model)
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
        stream = self._adapter.stream()

        async def feed() -> None:
            try:
                async for frame in frames:
                    stream.push_frame(frame)
            finally:
                with contextlib.suppress(RuntimeError):  # the stream was closed meanwhile
                    stream.end_input()

        feeding = asyncio.create_task(feed(), name=f"ear-feed-{identity}")
        try:
            async for event in stream:
                if event.type == stt.SpeechEventType.START_OF_SPEECH:
                    self._on_speaking(identity)
                elif event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                    text = event.alternatives[0].text.strip() if event.alternatives else ""
                    if text:
                        self._on_line(identity, text, eou_delay_s=_eou_delay(event))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # one person's broken audio must not end the room
            log.warning("ear_failed", identity=identity, error=repr(e))
        finally:
            feeding.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeding
            await stream.aclose()


def _eou_delay(event: stt.SpeechEvent) -> float | None:
    """Seconds from the end of speech (livekit's StreamAdapter stamps it, wall clock) to now."""
    if event.speech_end_time is None or event.speech_end_time <= 0:
        return None
    return round(max(time.time() - event.speech_end_time, 0.0), 4)
