"""workers/room/stage/persona_audio.py leans on one private livekit class; this fails loudly if
livekit changes what it relies on (then the adapter, not the stage, needs the update). What the
adapter does (a room of personas alone talks) is tested on the real server: tests/live/."""

from __future__ import annotations

import inspect

from livekit.agents.voice import io
from livekit.agents.voice.room_io import _output


def test_livekit_still_has_the_participant_audio_output_we_extend():
    cls = _output._ParticipantAudioOutput
    assert issubclass(cls, io.AudioOutput)
    params = inspect.signature(cls.__init__).parameters
    assert {"room", "sample_rate", "num_channels", "track_publish_options", "track_name"} <= set(
        params
    )
    # the method we replace, and what it must set up for capture_frame()
    assert inspect.iscoroutinefunction(cls._publish_track)
    assert "_subscribed_fut" in inspect.getsource(cls.capture_frame)
    src = inspect.getsource(cls.__init__)
    for attr in ("_lock", "_audio_source", "_publish_options", "_track_name", "_subscribed_fut"):
        assert f"self.{attr}" in src, attr
    assert "_publish_track" in inspect.getsource(cls.start)
