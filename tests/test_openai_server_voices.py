"""The local server's voices: one eSpeak voice per (voice, persona), kept, so a request's first
audio does not pay for a fresh one."""

from __future__ import annotations

from workers.openai_server.speech import Voices, speak_stream


async def test_a_voice_is_made_once_and_speaks_every_request() -> None:
    voices = Voices()
    try:
        tim = voices.of("ash", "tim")
        assert voices.of("ash", "tim") is tim
        assert voices.of("ash", "chris") is not tim
        for _ in range(2):  # the kept voice speaks again after a whole line
            chunks = [c async for c in speak_stream(tim, "Checking in on load two.")]
            assert sum(len(c) for c in chunks) > 24_000  # over half a second of 24 kHz audio
    finally:
        await voices.aclose()
