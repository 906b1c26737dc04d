"""What a persona's AgentSession needs, built from its catalog model settings and the
process's Settings (which server, which key: agents/endpoints.py).

Construction only: building these plugin objects opens no connection; using them does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# plugins register themselves on import, which livekit allows only on the main thread
from livekit.agents.vad import VAD
from livekit.plugins import openai
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad

from agents.endpoints import endpoint_for, models_choice, require_endpoint
from agents.offline import offline_models
from agents.session_models import SessionModels
from config.catalog import Persona
from config.settings import Settings

__all__ = [
    "SessionModels",
    "build_models",
    "build_text_models",
    "room_models",
    "room_models_choice",
]


def build_models(
    persona: Persona,
    settings: Settings,
    *,
    vad: VAD | None = None,
    hears_humans: bool = True,
) -> SessionModels:
    """Voice models for `persona` on its OpenAI-compatible server: one realtime model, or a
    pipeline. ValueError naming the variable when its key is not set.

    A pipeline persona that `hears_humans` gets VAD + STT + LLM + TTS: `vad` is the process's
    prewarmed silero VAD (load it once in the worker's setup_fnc), needed because OpenAI's STT
    does not detect the end of speech. One that does not (it hears the room through the
    floor's text relay, and has no audio input) gets LLM + TTS only: with no VAD and no STT,
    livekit starts no VAD stream and no STT task for its session, and no turn detector.
    A realtime persona is one model either way: its server-side VAD only runs on audio the
    session sends, and a persona without audio input sends none."""
    server = require_endpoint(persona, settings).plugin_kwargs()
    m = persona.model
    if m.mode == "realtime":
        # temperature is not passed: the Realtime plugin deprecates and ignores it.
        # The server detects the human's turns but never answers on its own: the floor
        # decides which persona answers (and asks it with generate_reply).
        realtime = openai.realtime.RealtimeModel(
            model=m.realtime_model,
            voice=persona.voice,
            turn_detection=ServerVad(
                type="server_vad", create_response=False, interrupt_response=False
            ),
            **server,
        )
        return SessionModels(llm=realtime)
    # One plugin instance per persona, never shared between sessions: livekit subscribes each
    # session to its models' `metrics_collected` events, so a shared LLM or TTS would report
    # every session's usage in every session (tests/test_models.py checks they stay apart).
    models = SessionModels(
        llm=openai.LLM(model=m.llm, temperature=m.temperature, **server),
        # pcm: no decoding in the job process, and the fastest first audio OpenAI offers
        tts=openai.TTS(model=m.tts, voice=persona.voice, response_format="pcm", **server),
    )
    if not hears_humans:
        return models
    if vad is None:
        raise ValueError(
            f"pipeline persona {persona.id!r} hears the humans, so it needs a VAD: pass the "
            "process's silero VAD (silero.VAD.load() in the worker's setup_fnc)"
        )
    models.vad = vad
    models.stt = openai.STT(model=m.stt, **server)
    return models


def build_text_models(persona: Persona, settings: Settings) -> SessionModels:
    """Text only (the simulation with a key): the persona's pipeline LLM, also for realtime
    personas, whose realtime model would need audio."""
    m = persona.model
    server = require_endpoint(persona, settings).plugin_kwargs()
    return SessionModels(llm=openai.LLM(model=m.llm, temperature=m.temperature, **server))


def room_models(
    persona: Persona,
    scenario: Any,  # config.scenario.Scenario
    cast_names: dict[str, str],
    *,
    hears_humans: bool,
    vad: VAD | None,
    settings: Settings,
) -> SessionModels:
    """The one switch, per persona of a LiveKit room: with its key set, the catalog's models
    on its OpenAI-compatible server (STT and VAD only for the persona that hears humans);
    without, the offline model speaking the scenario's script with the offline voice (eSpeak
    NG), and for the persona that hears humans, VAD + pocketsphinx."""
    if endpoint_for(persona, settings) is None:
        return offline_models(
            persona, scenario, cast_names, voice=True, hears_humans=hears_humans, vad=vad
        )
    return build_models(persona, settings, vad=vad, hears_humans=hears_humans)


def room_models_choice(personas: Iterable[Persona], settings: Settings) -> dict[str, Any]:
    """What `room_models` will choose for `personas`, for the log: models, voice, hosts."""
    return models_choice(personas, settings)
