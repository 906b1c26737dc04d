"""The OpenAI models and voices a persona may name, checked when the catalog is loaded.

These mirror the Literal types of livekit-plugins-openai (a test keeps them in step) so the
catalog can be validated without importing the plugin.
"""

from __future__ import annotations

REALTIME_MODELS = ("gpt-realtime", "gpt-realtime-1.5", "gpt-realtime-2", "gpt-4o-realtime-preview")
REALTIME_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar",
)  # fmt: skip
LLM_MODELS = (
    "gpt-5.1", "gpt-5", "gpt-5-mini", "gpt-5-nano",
    "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "gpt-4o", "gpt-4o-mini",
)  # fmt: skip
STT_MODELS = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "whisper-1")
TTS_MODELS = ("gpt-4o-mini-tts", "tts-1", "tts-1-hd")
TTS_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer",
)  # fmt: skip
