"""What a persona falls back to when its model fails, and who hears about a rejected key.

A pipeline persona's LLM, TTS and STT each run behind livekit's FallbackAdapter: its own model
(retried as MODEL_MAX_RETRY / MODEL_TIMEOUT_S / MODEL_RETRY_INTERVAL_S say), then the catalog's
`fallback` model if there is one, then, last, the offline voice: eSpeak NG speaks the line the
LLM wrote, and when no LLM answers, the `ApologyLLM` says a short apology. A persona the
scenario requires cannot go on without its model: its apology ends the conversation (it calls
`end_conversation` with the reason "model_failed", and the room ends `model_failed`); an
optional one apologises and the floor goes on.

A request refused for its key (HTTP 401) is reported once per key variable and server, with
the variable's name and the host, never the key.
"""

from __future__ import annotations

import threading
from typing import Any

from livekit.agents import llm
from livekit.agents.types import APIConnectOptions, NotGivenOr

from agents.endpoints import Endpoint
from agents.scripted_llm import Reply, ScriptedLLM
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


class ApologyLLM(ScriptedLLM[Reply]):
    """The last LLM of a persona's fallback chain: always answers, with a short apology; for
    a required persona, after calling end_conversation (if it is offered)."""

    def __init__(self, persona_id: str, *, required: bool) -> None:
        super().__init__(model="apology", provider="offline")
        self._persona = persona_id
        self._required = required
        self._count = 0

    def _reply(
        self,
        *,
        chat_ctx: llm.ChatContext,
        tools: list[llm.Tool],
        tool_choice: NotGivenOr[llm.ToolChoice],
    ) -> Reply:
        self._count += 1
        rid = f"apology-{self._persona}-{self._count}"
        if not self._required:
            return Reply(rid, text=APOLOGY_OPTIONAL)
        call_id = f"{rid}-end"
        ended = any(
            i.type == "function_call_output" and i.call_id == call_id for i in chat_ctx.items
        )
        offered = any(t.id == "end_conversation" for t in tools)
        if ended or not offered:
            return Reply(rid, text=APOLOGY_REQUIRED)
        self._count -= 1  # the same id once the tool has run, to find its output
        end = llm.FunctionToolCall(
            name="end_conversation", arguments=f'{{"reason": "{MODEL_FAILED}"}}', call_id=call_id
        )
        return Reply(rid, tool_calls=(end,))


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
