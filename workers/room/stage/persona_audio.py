"""A persona's voice track, published the moment the persona joins, played out with nobody
listening.

livekit-agents 1.8's RoomIO publishes a session's audio track only once it has linked a
human-like participant (STANDARD/SIP/CONNECTOR), and its output holds every frame until someone
has subscribed to that track (`voice/room_io/_output.py`: `_ParticipantAudioOutput`,
`capture_frame` awaits `_subscribed_fut`). Personas are agent participants and never link each
other, so a room of personas alone never published a track and its first turn never finished.

So each persona gets livekit's own output (the same pacing, pause/clear and playout events the
session relies on), started by the stage at join, with the subscription wait dropped: the
native audio source plays out in real time whether anyone listens or not. livekit has no
public way to ask for that, so the private class is used here alone; tests/test_persona_audio.py
fails loudly if livekit changes it.
"""

from __future__ import annotations

from typing import Any

from livekit import rtc
from livekit.agents.voice.room_io import _output

OUTPUT_SAMPLE_RATE = 24000  # RoomIO's default: the session resamples each TTS to it


class _PublishAtOnce(_output._ParticipantAudioOutput):  # private livekit class, see above
    async def _publish_track(self) -> None:
        async with self._lock:
            track = rtc.LocalAudioTrack.create_audio_track(self._track_name, self._audio_source)
            self._publication = await self._room.local_participant.publish_track(
                track, self._publish_options
            )
            # no wait_for_subscription(): playout must not depend on a listener
            if not self._subscribed_fut.done():
                self._subscribed_fut.set_result(None)


def persona_audio_output(room: rtc.Room, track_name: str) -> Any:
    """An `io.AudioOutput` for `session.output.audio`; `await output.start()` publishes
    `track_name` at once (call it once the room is connected)."""
    return _PublishAtOnce(
        room,
        sample_rate=OUTPUT_SAMPLE_RATE,
        num_channels=1,
        track_publish_options=rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
        track_name=track_name,
    )
