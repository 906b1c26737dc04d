"""What a persona's AgentSession needs, built from its catalog model settings and the
process's Settings (which server, which key: agents/endpoints.py).

Construction only: building these plugin objects opens no connection; using them does.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from livekit.agents import APIConnectionError, APIError

# plugins register themselves on import, which livekit allows only on the main thread
from livekit.agents.llm import LLM, FallbackAdapter, RealtimeModelError
from livekit.agents.stt import STT
from livekit.agents.stt import FallbackAdapter as stt_fallback
from livekit.agents.tts import TTS
from livekit.agents.tts import FallbackAdapter as tts_fallback
from livekit.agents.vad import VAD
from livekit.plugins import openai, silero
from openai.types.realtime.realtime_audio_input_turn_detection import ServerVad

from agents.endpoints import (
    Endpoint,
    ModelClients,
    endpoint_for,
    endpoint_of,
    models_choice,
    require_endpoint,
)
from agents.espeak_tts import EspeakTTS
from agents.fallback import (
    ApologyLLM,
    ModelFailures,
    conn_options,
    report_rejected_key,
    watch_key,
)
from agents.offline import offline_models
from agents.session_models import SessionModels
from agents.tool_schemas import OpenAILLM
from config.catalog import Persona, PipelineModels
from config.settings import Settings

__all__ = [
    "SessionModels",
    "build_models",
    "build_text_models",
    "room_models",
    "room_models_choice",
]

# The end of a human's speech: this much silence after it (silero's default is 0.55 s). eSpeak's
# longest pause inside a line measured 0.39 s (sentence ends; the scenarios' human lines in two
# voices): much below ~0.4 s a caller's line would reach the floor in pieces.
END_OF_SPEECH_SILENCE_S = 0.45
# The offline voice's humans speak eSpeak, whose pauses inside a line are short dips that silero
# does not follow all the way down. With the silence counted only below a probability of 0.1
# (livekit's default: 0.35, activation - 0.15), the longest pause inside a line counts 9 of
# silero's 32 ms windows (0.29 s; the 33 lines of the scenarios and the latency bench, 13 voices,
# 4 window alignments; 12 windows at 0.35), so 10 windows end the speech: 0.43 s after its
# last sound (p50; was 0.55 s with 15 windows at 0.35). Real speech dips less cleanly, so a
# worker with a key keeps livekit's threshold and the longer silence.
OFFLINE_END_OF_SPEECH_SILENCE_S = 0.3  # 10 windows: silero counts whole windows (>= 0.3 s)
OFFLINE_DEACTIVATION_THRESHOLD = 0.1


def load_vad(*, offline: bool = False) -> VAD:
    """The process's silero VAD (load it once, in the worker's setup_fnc), ending speech after
    END_OF_SPEECH_SILENCE_S; `offline` (a worker with no key: its humans are heard by the
    offline ear) tuned for eSpeak's speech instead."""
    if offline:
        return silero.VAD.load(
            min_silence_duration=OFFLINE_END_OF_SPEECH_SILENCE_S,
            deactivation_threshold=OFFLINE_DEACTIVATION_THRESHOLD,
        )
    return silero.VAD.load(min_silence_duration=END_OF_SPEECH_SILENCE_S)


def build_models(
    persona: Persona,
    settings: Settings,
    *,
    vad: VAD | None = None,
    hears_humans: bool = True,
    required: bool = True,
    clients: ModelClients | None = None,
) -> SessionModels:
    """Voice models for `persona` on its OpenAI-compatible server: one realtime model, or a
    pipeline. ValueError naming the variable when its key is not set.

    A pipeline persona that `hears_humans` gets VAD + STT + LLM + TTS: `vad` is the process's
    prewarmed silero VAD (load it once in the worker's setup_fnc), needed because OpenAI's STT
    does not detect the end of speech. One that does not (it hears the room through the
    floor's text relay, and has no audio input) gets LLM + TTS only: with no VAD and no STT,
    livekit starts no VAD stream and no STT task for its session, and no turn detector.
    A realtime persona is one model either way: its server-side VAD only runs on audio the
    session sends, and a persona without audio input sends none.

    A pipeline's LLM, TTS and STT fall back as agents/fallback.py says (`required`: whether
    the scenario needs this persona, so whether its apology ends the conversation).

    `clients`: the room's HTTP clients (the room closes them when it ends); without, each
    plugin gets a client of its own, never closed."""
    endpoint = require_endpoint(persona, settings)
    m = persona.model
    options = conn_options(settings)
    if m.mode == "realtime":
        # temperature is not passed: the Realtime plugin deprecates and ignores it.
        # The server detects the human's turns but never answers on its own: the floor
        # decides which persona answers (and asks it with generate_reply).
        realtime = WatchedRealtimeModel(
            endpoint,
            persona.id,
            model=m.realtime_model,
            voice=persona.voice,
            turn_detection=ServerVad(
                type="server_vad", create_response=False, interrupt_response=False
            ),
            conn_options=options,
            **endpoint.plugin_kwargs(),
        )
        return SessionModels(llm=realtime)
    # One plugin instance per persona, never shared between sessions: livekit subscribes each
    # session to its models' `metrics_collected` events, so a shared LLM or TTS would report
    # every session's usage in every session (tests/test_models.py checks they stay apart).
    tiers: list[tuple[PipelineModels, Endpoint]] = [(m, endpoint)]
    if m.fallback is not None:
        fallback_endpoint = endpoint_of(m.fallback, settings)
        if fallback_endpoint is not None:
            tiers.append((m.fallback, fallback_endpoint))
    llms: list[LLM] = [_llm(t, e, persona.id, clients) for t, e in tiers]
    llms.append(ApologyLLM(persona.id, required=required))
    ttss: list[TTS] = [_tts(t, e, persona.id, persona.voice, clients) for t, e in tiers]
    ttss.append(EspeakTTS(voice=persona.voice, key=persona.id))  # the offline voice, last
    models = SessionModels(
        llm=FallbackAdapter(
            llms,
            attempt_timeout=options.timeout,
            max_retry_per_llm=options.max_retry,
            retry_interval=options.retry_interval,
        ),
        tts=tts_fallback(ttss, max_retry_per_tts=options.max_retry),
    )
    if not hears_humans:
        return models
    if vad is None:
        raise ValueError(
            f"pipeline persona {persona.id!r} hears the humans, so it needs a VAD: pass the "
            "process's silero VAD (silero.VAD.load() in the worker's setup_fnc)"
        )
    models.vad = vad
    stts: list[STT] = [_stt(t, e, persona.id, clients) for t, e in tiers]
    models.stt = (
        stts[0]
        if len(stts) == 1
        else stt_fallback(
            stts,
            vad=vad,
            attempt_timeout=options.timeout,
            max_retry_per_stt=options.max_retry,
            retry_interval=options.retry_interval,
        )
    )
    return models


def _llm(m: PipelineModels, endpoint: Endpoint, persona: str, clients: ModelClients | None) -> LLM:
    kwargs = endpoint.client_kwargs(clients)
    plugin = OpenAILLM(model=m.llm, temperature=m.temperature, **kwargs)
    watch_key(plugin, endpoint, persona)
    return plugin


def _tts(
    m: PipelineModels, endpoint: Endpoint, persona: str, voice: str, clients: ModelClients | None
) -> TTS:
    # pcm: no decoding in the job process, and the fastest first audio OpenAI offers
    kwargs = endpoint.client_kwargs(clients)
    plugin = openai.TTS(model=m.tts, voice=voice, response_format="pcm", **kwargs)
    watch_key(plugin, endpoint, persona)
    return plugin


def _stt(m: PipelineModels, endpoint: Endpoint, persona: str, clients: ModelClients | None) -> STT:
    plugin = openai.STT(model=m.stt, **endpoint.client_kwargs(clients))
    watch_key(plugin, endpoint, persona)
    return plugin


class WatchedRealtimeModel(openai.realtime.RealtimeModel):
    """The plugin's RealtimeModel, its sessions' errors checked for a rejected key, and its
    failed responses counted in `failures` (livekit tells one with a recoverable `error`
    event, and does not retry it); a lost socket it cannot get back closes the session."""

    def __init__(self, endpoint: Endpoint, persona: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._endpoint, self._persona = endpoint, persona
        options = kwargs.get("conn_options")
        self.failures = ModelFailures(
            retries=options.max_retry if options is not None else 0,
            retry_interval_s=options.retry_interval if options is not None else 0.0,
        )

    def session(self, *, turn_detection_disabled: bool = False) -> Any:
        session = super().session(turn_detection_disabled=turn_detection_disabled)
        session.on("error", self._on_error)
        return session

    def _on_error(self, ev: Any) -> None:
        report_rejected_key(self._endpoint, self._persona, ev)
        # a failed response or a refused request (APIError); not a lost socket being retried
        # (APIConnectionError), whose response livekit finishes after reconnecting
        error = getattr(ev, "error", None)
        if (
            isinstance(ev, RealtimeModelError)
            and ev.recoverable
            and isinstance(error, APIError)
            and not isinstance(error, APIConnectionError)
        ):
            self.failures.failed(repr(error))


def build_text_models(persona: Persona, settings: Settings) -> SessionModels:
    """Text only (the simulation with a key): the persona's pipeline LLM, also for realtime
    personas, whose realtime model would need audio."""
    endpoint = require_endpoint(persona, settings)
    return SessionModels(llm=_llm(persona.model, endpoint, persona.id, None))


def room_models(
    persona: Persona,
    scenario: Any,  # config.scenario.Scenario
    cast_names: dict[str, str],
    *,
    hears_humans: bool,
    vad: VAD | None,
    settings: Settings,
    clients: ModelClients | None = None,
) -> SessionModels:
    """The one switch, per persona of a LiveKit room: with its key set, the catalog's models
    on its OpenAI-compatible server (STT and VAD only for the persona that hears humans);
    without, the offline model speaking the scenario's script with the offline voice (eSpeak
    NG), and for the persona that hears humans, VAD + pocketsphinx. `clients`: the room's
    HTTP clients, which the room closes when it ends."""
    if endpoint_for(persona, settings) is None:
        return offline_models(
            persona, scenario, cast_names, voice=True, hears_humans=hears_humans, vad=vad
        )
    # whether the room can go on without this persona, should its models all fail
    required = next((s.required for s in scenario.cast if s.role == persona.role), True)
    return build_models(
        persona, settings, vad=vad, hears_humans=hears_humans, required=required, clients=clients
    )


def room_models_choice(personas: Iterable[Persona], settings: Settings) -> dict[str, Any]:
    """What `room_models` will choose for `personas`, for the log: models, voice, hosts."""
    return models_choice(personas, settings)
