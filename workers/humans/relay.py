"""The audio half of the warm hand-over: speaking a briefing into a track, and relaying audio
between two rooms frame by frame.

Every leg of the relay runs at one rate (48 kHz mono, what livekit's WebRTC decoder gives and
its encoder takes), in 20 ms frames, so nothing is resampled on the way: only the briefing,
spoken at the TTS's own rate, goes through a resampler once. The queues are small and drop
the oldest frame when full: a relay that falls behind loses a little audio instead of
adding delay to the rest of the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from livekit import rtc
from livekit.agents import tts

RATE = 48_000
CHANNELS = 1
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
# What the receiving side may hold (FFI stream queue, frames) and the sending side may buffer
# (AudioSource queue, ms): both bound the delay a hiccup can add, about 100 ms each.
STREAM_CAPACITY = 5
SOURCE_QUEUE_MS = 100
# A mixed stream that gives no frame within this long is left out of that frame: a caller
# whose audio stalls must not slow the others below real time (rounds stay one frame long).
MIX_WAIT_MS = FRAME_MS


# Audio waiting in the sending source beyond this is dropped, a frame at a time: a backlog
# (the first frames of a stream arriving together, a stall of the event loop) would
# otherwise stay in the call as delay for good, since a source plays out at real time.
MAX_BACKLOG_S = 3 * FRAME_MS / 1000


class FrameSink(Protocol):
    @property
    def queued_duration(self) -> float: ...

    async def capture_frame(self, frame: rtc.AudioFrame) -> None: ...


def relay_source() -> rtc.AudioSource:
    return rtc.AudioSource(RATE, CHANNELS, queue_size_ms=SOURCE_QUEUE_MS)


class TrackFrames:
    """A remote track's audio as the relay carries it: 48 kHz mono 20 ms frames, at most
    STREAM_CAPACITY frames waiting (the oldest dropped). Iterates frames, not events; a
    read may be cancelled (the mixer does) without ending the stream."""

    def __init__(self, track: rtc.Track) -> None:
        self._stream = rtc.AudioStream(
            track,
            sample_rate=RATE,
            num_channels=CHANNELS,
            frame_size_ms=FRAME_MS,
            capacity=STREAM_CAPACITY,
        )

    def __aiter__(self) -> TrackFrames:
        return self

    async def __anext__(self) -> rtc.AudioFrame:
        return (await self._stream.__anext__()).frame

    async def aclose(self) -> None:
        await self._stream.aclose()


async def pump(
    frames: AsyncIterator[rtc.AudioFrame],
    sink: FrameSink,
    count: Callable[[], None],
    dropped: Callable[[], None] = lambda: None,
) -> None:
    """Every frame of `frames` into `sink`, as it comes, until `frames` ends; a frame that
    finds more than MAX_BACKLOG_S waiting in `sink` is dropped instead."""
    async for frame in frames:
        if sink.queued_duration > MAX_BACKLOG_S:
            dropped()
            continue
        await sink.capture_frame(frame)
        count()


class Mix:
    """The caller room's voices mixed into one stream for the human: one input per remote
    audio track (added and removed as tracks come and go), livekit's AudioMixer doing the
    sum in 20 ms blocks. With no input it yields nothing."""

    def __init__(self) -> None:
        self._mixer = rtc.AudioMixer(
            RATE, CHANNELS, blocksize=FRAME_SAMPLES, stream_timeout_ms=MIX_WAIT_MS
        )
        self._inputs: dict[str, AsyncIterator[rtc.AudioFrame]] = {}

    def __aiter__(self) -> AsyncIterator[rtc.AudioFrame]:
        return self._mixer

    @property
    def inputs(self) -> list[str]:
        return list(self._inputs)

    def add(self, key: str, frames: AsyncIterator[rtc.AudioFrame]) -> None:
        self.remove(key)
        self._inputs[key] = frames
        self._mixer.add_stream(frames)

    def remove(self, key: str) -> AsyncIterator[rtc.AudioFrame] | None:
        frames = self._inputs.pop(key, None)
        if frames is not None:
            self._mixer.remove_stream(frames)
        return frames

    async def aclose(self) -> None:
        self._inputs.clear()
        await self._mixer.aclose()


async def speak(engine: tts.TTS, text: str, sink: rtc.AudioSource) -> float:
    """`text` spoken with `engine` into `sink` (resampled once to the sink's rate), waiting
    until it has all been played out. Returns the seconds of audio spoken."""
    seconds = 0.0
    resampler: rtc.AudioResampler | None = None
    async with engine.synthesize(text) as stream:
        async for chunk in stream:
            frame = chunk.frame
            frames = [frame]
            if frame.sample_rate != sink.sample_rate:
                if resampler is None:
                    resampler = rtc.AudioResampler(
                        frame.sample_rate, sink.sample_rate, num_channels=frame.num_channels
                    )
                frames = resampler.push(frame)
            for out in frames:
                seconds += out.duration
                await sink.capture_frame(out)
    if resampler is not None:
        for out in resampler.flush():
            seconds += out.duration
            await sink.capture_frame(out)
    await sink.wait_for_playout()
    return seconds


class Clock:
    """Seconds on the line, from start() to stop() (or to now while still on)."""

    def __init__(self) -> None:
        self._started: float | None = None
        self._stopped: float | None = None

    def start(self) -> None:
        self._started = time.monotonic()

    def stop(self) -> None:
        if self._started is not None and self._stopped is None:
            self._stopped = time.monotonic()

    @property
    def seconds(self) -> float:
        if self._started is None:
            return 0.0
        return round((self._stopped or time.monotonic()) - self._started, 3)


async def cancel_all(tasks: set[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait for each to end (their errors are theirs: already logged)."""
    for task in tasks:
        task.cancel()
    for task in list(tasks):
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    tasks.clear()
