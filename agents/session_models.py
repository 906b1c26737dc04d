"""What a persona's AgentSession is built from: its LLM (or realtime model), STT, TTS and VAD."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livekit.agents.llm import LLM, RealtimeModel
from livekit.agents.stt import STT
from livekit.agents.tts import TTS
from livekit.agents.vad import VAD


@dataclass
class SessionModels:
    llm: LLM | RealtimeModel
    stt: STT | None = None
    tts: TTS | None = None
    vad: VAD | None = None
    offline: bool = False  # the scripted offline model (agents/offline.py), no provider

    @property
    def speaks(self) -> bool:
        """Whether these models produce audio (a TTS, or a realtime model)."""
        return self.tts is not None or isinstance(self.llm, RealtimeModel)

    def session_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AgentSession(...)."""
        return {"llm": self.llm, "stt": self.stt, "tts": self.tts, "vad": self.vad}
