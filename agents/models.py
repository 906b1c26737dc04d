"""What a persona's AgentSession needs, built from its catalog model settings.

Construction only: building these plugin objects opens no connection; using them does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# plugins register themselves on import, which livekit allows only on the main thread
from livekit.agents.llm import LLM, RealtimeModel
from livekit.agents.stt import STT
from livekit.agents.tts import TTS
from livekit.agents.vad import VAD
from livekit.plugins import openai, silero
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad
from pydantic import SecretStr

from config.catalog import Persona
from config.settings import Settings

# A key as callers hold it: wrapped (from Settings) or plain; "" and None mean "not given".
ApiKey = SecretStr | str | None


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


# The end of a human's speech: this much silence after it (silero's default is 0.55 s). eSpeak's
# longest pause inside a line measured 0.39 s (sentence ends; the scenarios' human lines in two
# voices): much below ~0.4 s a caller's line would reach the floor in pieces.
END_OF_SPEECH_SILENCE_S = 0.45


def load_vad() -> VAD:
    """The process's silero VAD (load it once, in the worker's setup_fnc), ending speech after
    END_OF_SPEECH_SILENCE_S."""
    return silero.VAD.load(min_silence_duration=END_OF_SPEECH_SILENCE_S)


def _plain(key: ApiKey) -> str | None:
    text = key.get_secret_value() if isinstance(key, SecretStr) else key
    return text if text and text.strip() else None


def _api_key(openai_api_key: ApiKey) -> str:
    """The key handed to the OpenAI plugins, unwrapped only here: the caller's, else the one
    Settings reads (environment or .env; read afresh, so a key exported later counts)."""
    key = _plain(openai_api_key) or _plain(Settings().openai_key())
    if key is None:
        raise ValueError(
            "OPENAI_API_KEY is not set: the personas' OpenAI models need it. "
            "Set it, or run offline with agents.offline.offline_models()."
        )
    return key


def build_models(
    persona: Persona,
    *,
    vad: VAD | None = None,
    openai_api_key: ApiKey = None,
    hears_humans: bool = True,
) -> SessionModels:
    """Voice models for `persona`: one realtime model, or a pipeline.

    A pipeline persona that `hears_humans` gets VAD + STT + LLM + TTS: `vad` is the process's
    prewarmed silero VAD (load it once in the worker's setup_fnc), needed because OpenAI's STT
    does not detect the end of speech. One that does not (it hears the room through the
    floor's text relay, and has no audio input) gets LLM + TTS only: with no VAD and no STT,
    livekit starts no VAD stream and no STT task for its session, and no turn detector.
    A realtime persona is one model either way: its server-side VAD only runs on audio the
    session sends, and a persona without audio input sends none."""
    key = _api_key(openai_api_key)
    m = persona.model
    if m.mode == "realtime":
        # temperature is not passed: the Realtime plugin deprecates and ignores it.
        # The server detects the human's turns but never answers on its own: the floor
        # decides which persona answers (and asks it with generate_reply).
        realtime = openai.realtime.RealtimeModel(
            model=m.realtime_model,
            voice=persona.voice,
            api_key=key,
            turn_detection=ServerVad(
                type="server_vad", create_response=False, interrupt_response=False
            ),
        )
        return SessionModels(llm=realtime)
    # One plugin instance per persona, never shared between sessions: livekit subscribes each
    # session to its models' `metrics_collected` events, so a shared LLM or TTS would report
    # every session's usage in every session (tests/test_models.py checks they stay apart).
    models = SessionModels(
        llm=openai.LLM(model=m.llm, temperature=m.temperature, api_key=key),
        tts=openai.TTS(model=m.tts, voice=persona.voice, api_key=key),
    )
    if not hears_humans:
        return models
    if vad is None:
        raise ValueError(
            f"pipeline persona {persona.id!r} hears the humans, so it needs a VAD: pass the "
            "process's silero VAD (silero.VAD.load() in the worker's setup_fnc)"
        )
    models.vad = vad
    models.stt = openai.STT(model=m.stt, api_key=key)
    return models


def build_text_models(persona: Persona, *, openai_api_key: ApiKey) -> SessionModels:
    """Text only (the simulation with a key): the persona's pipeline LLM, also for realtime
    personas, whose realtime model would need audio."""
    m = persona.model
    return SessionModels(
        llm=openai.LLM(model=m.llm, temperature=m.temperature, api_key=_api_key(openai_api_key))
    )


def room_models(
    persona: Persona,
    scenario: Any,  # config.scenario.Scenario
    cast_names: dict[str, str],
    *,
    hears_humans: bool,
    vad: VAD | None,
    openai_api_key: ApiKey,
) -> SessionModels:
    """The one switch, per persona of a LiveKit room: with an OpenAI key, the catalog's OpenAI
    models (STT and VAD only for the persona that hears humans); without one, the offline
    model speaking the scenario's script with the offline voice (eSpeak NG), and for the
    persona that hears humans, VAD + pocketsphinx."""
    if _plain(openai_api_key) is None:
        # agents.offline builds on this module's SessionModels: imported here, not above
        from agents.offline import offline_models

        return offline_models(
            persona, scenario, cast_names, voice=True, hears_humans=hears_humans, vad=vad
        )
    return build_models(persona, vad=vad, openai_api_key=openai_api_key, hears_humans=hears_humans)


def room_models_choice(openai_api_key: ApiKey) -> dict[str, str]:
    """What `room_models` will choose, for the log: the models and the voice."""
    if _plain(openai_api_key) is None:
        return {"models": "offline", "voice": "espeak-ng + pocketsphinx"}
    return {"models": "openai", "voice": "catalog voices"}
