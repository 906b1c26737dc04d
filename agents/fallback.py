"""What a persona falls back to when its model fails, and who hears about a rejected key.

A pipeline persona's LLM, TTS and STT each run behind livekit's FallbackAdapter: its own model
(retried as MODEL_MAX_RETRY / MODEL_TIMEOUT_S / MODEL_RETRY_INTERVAL_S say), then the catalog's
`fallback` model if there is one, then, last, the offline voice: eSpeak NG speaks the line the
LLM wrote, and when no LLM answers, the `ApologyLLM` says a short apology. A realtime persona's
response that fails (livekit does not retry one: it reconnects only a lost socket) is told by
its model's recoverable `error` events; the floor then says the apology in the offline voice
(`say_apology`). Either way the persona's `ModelFailures` counts it, and the floor reads that,
by type, never from what was said: a persona the scenario requires cannot go on without its
model, and the room ends `model_failed`; an optional one apologises and the floor goes on.

A request refused for its key (HTTP 401) is reported once per key variable and server, with
the variable's name and the host, never the key.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import Any

from livekit import rtc
from livekit.agents import llm
from livekit.agents.types import APIConnectOptions, NotGivenOr

from agents.endpoints import Endpoint
from agents.espeak_tts import EspeakTTS
from agents.scripted_llm import Reply, ScriptedLLM
from config.catalog import Persona
from config.logging import get_logger
from config.settings import Settings

log = get_logger("agents.fallback")

MODEL_FAILED = "model_failed"
APOLOGY_REQUIRED = "Sorry, I have lost my connection and cannot go on. We will have to stop here."
APOLOGY_OPTIONAL = "Sorry, I have lost my connection for a moment. Please go on without me."


def conn_options(settings: Settings) -> APIConnectOptions:
    """livekit's connection options for every model request, from the settings."""
    return APIConnectOptions(
        max_retry=settings.model_max_retry,
        retry_interval=settings.model_retry_interval_s,
        timeout=settings.model_timeout_s,
    )


def apology(*, required: bool) -> str:
    return APOLOGY_REQUIRED if required else APOLOGY_OPTIONAL


class ModelFailures:
    """How often a persona's models have failed a turn: every pipeline model in turn (its
    apology model answered), or a realtime response. The floor compares the count before and
    after a turn."""

    def __init__(self, *, retries: int = 0, retry_interval_s: float = 0.0) -> None:
        self.count = 0
        self.last = ""
        # a realtime response that failed is asked for again this many times (livekit retries
        # a pipeline's requests itself, not a realtime response): the connection options'
        self.retries = retries
        self.retry_interval_s = retry_interval_s

    def failed(self, why: str) -> None:
        self.count += 1
        self.last = why

    def retry_delay_s(self, attempt: int) -> float:
        """The wait before retry `attempt` (1, 2, ...): at once for the first, as livekit's
        connection options do (0.1 s), then the options' retry interval."""
        return 0.1 if attempt <= 1 else self.retry_interval_s


class ApologyLLM(ScriptedLLM[Reply]):
    """The last LLM of a persona's fallback chain: always answers, with a short apology,
    counted in its `failures`."""

    def __init__(self, persona_id: str, *, required: bool) -> None:
        super().__init__(model="apology", provider="offline")
        self._persona = persona_id
        self._required = required
        self._count = 0
        self.failures = ModelFailures()

    def _reply(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        tool_choice: NotGivenOr[llm.ToolChoice],
    ) -> Reply:
        self._count += 1
        self.failures.failed("every model failed")
        return Reply(
            f"apology-{self._persona}-{self._count}", text=apology(required=self._required)
        )


def model_failures(model: Any) -> ModelFailures | None:
    """The failure count of a session's LLM (a pipeline's fallback chain, or a realtime model
    built by agents/models.py); None for a model that keeps none (the offline model)."""
    for m in reversed(chain(model)):
        failures = getattr(m, "failures", None)
        if isinstance(failures, ModelFailures):
            return failures
    return None


async def _offline_audio(text: str, persona: Persona) -> AsyncIterator[rtc.AudioFrame]:
    tts = EspeakTTS(voice=persona.voice, key=persona.id)
    try:
        async with tts.synthesize(text) as stream:
            async for ev in stream:
                yield ev.frame
    finally:
        await tts.aclose()


async def say_apology(session: Any, persona: Persona, *, required: bool) -> str:
    """Say the apology in `persona`'s offline voice on its AgentSession (a realtime persona's,
    whose model cannot say anything now); the text said. RuntimeError if the session is
    closed."""
    text = apology(required=required)
    # not added to the realtime model's context: the floor relays it to the others
    handle = session.say(text, audio=_offline_audio(text, persona), add_to_chat_ctx=False)
    await handle
    return text


# ---- a rejected key, reported once ----------------------------------------------------------

_reported: set[tuple[str, str]] = set()
_reported_lock = threading.Lock()


def _status(error: Any) -> int | None:
    """The HTTP status of a model error event's error, or of what caused it."""
    err = getattr(error, "error", error)
    while err is not None:
        status = getattr(err, "status_code", None) or getattr(err, "status", None)
        if isinstance(status, int):
            return status
        err = err.__cause__
    return None


def report_rejected_key(endpoint: Endpoint, persona: str, error: Any) -> bool:
    """Log `model_key_rejected` the first time `endpoint`'s key is refused (HTTP 401) in this
    process; True when this call logged it."""
    if _status(error) != 401:
        return False
    with _reported_lock:
        if (endpoint.key_env, endpoint.host) in _reported:
            return False
        _reported.add((endpoint.key_env, endpoint.host))
    log.error(
        "model_key_rejected",
        persona=persona,
        key_env=endpoint.key_env,
        endpoint=endpoint.host,
        fix=f"set {endpoint.key_env} to a key {endpoint.host} accepts",
    )
    return True


def watch_key(plugin: Any, endpoint: Endpoint, persona: str) -> None:
    """Report a 401 from `plugin` (an LLM, TTS or STT: they emit `error` events)."""
    plugin.on("error", lambda ev: report_rejected_key(endpoint, persona, ev))


_CHAIN_ATTRS = ("_llm_instances", "_tts_instances", "_stt_instances")


def chain(model: Any) -> list[Any]:
    """The models behind one of livekit's FallbackAdapters (LLM, TTS or STT), in order; just
    [model] for any other. The one place that reads the adapters' private lists (livekit has
    no public accessor); tests/test_model_failures.py fails if livekit renames them."""
    for attr in _CHAIN_ATTRS:
        inner = getattr(model, attr, None)
        if isinstance(inner, list):
            return list(inner)
    return [model]
