"""OpenTelemetry traces of rooms: one trace per room, a span for each persona turn, tool call and
ring leg of a transfer to people, events for floor decisions, hand-overs (to personas and to
people) and human lines, and livekit-agents' own spans (model calls) nested under the room.

Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set (OTLP over HTTP, as OpenTelemetry's own variable
means it; `/v1/traces` is appended). `configure_tracing` installs the provider in the process
that runs rooms (a job process, or `workers.simulate`) and hands it to livekit-agents with its
content redaction on. `RoomTrace` is a transcript listener: the transcript already records
every turn with its start and end, so the spans follow the record exactly. The transcript
writes `room_started` from the room's own task; the room's span becomes that task's current
span there, so the sessions started after it (and livekit's model-call spans inside them)
belong to the room's trace.

What people said (persona lines, human lines, tool arguments and results) is never put on a
span unless `OTEL_CAPTURE_CONTENT=true`; secrets never are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanProcessor

from config.logging import get_logger

log = get_logger("workers.room.tracing")

TRACER_NAME = "multi-persona-worker"
NS = 1_000_000_000


def configure_tracing(
    endpoint: str | None,
    *,
    service: str,
    capture_content: bool = False,
    exporter: SpanExporter | None = None,
    processor: Callable[[SpanExporter], SpanProcessor] = BatchSpanProcessor,
) -> TracerProvider | None:
    """The process's tracer provider, exporting to `endpoint` (or to `exporter`, tests); None,
    and nothing installed, when neither is given. livekit's spans carry what people said only
    with `capture_content`. Call `provider.shutdown()` before the process exits so the last
    spans are sent."""
    if exporter is None:
        if not endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(processor(exporter))
    # livekit's own spans (agent turns, LLM/TTS/STT requests), with its redaction of content
    from livekit.agents.telemetry import set_tracer_provider

    set_tracer_provider(provider, allow_pii=capture_content)
    log.info("tracing_enabled", endpoint=_host(endpoint) if endpoint else "in-process exporter")
    return provider


def _host(endpoint: str) -> str:
    """Where spans go, without any credentials a URL might carry."""
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


class RoomTrace:
    """A transcript listener that turns one room's record into spans (see the module doc)."""

    def __init__(self, provider: TracerProvider, *, capture_content: bool = False) -> None:
        self._tracer = provider.get_tracer(TRACER_NAME)
        self._content = capture_content
        self._room: trace.Span | None = None
        self._token: object | None = None
        self._base: dict[str, Any] = {}
        self._roles: dict[str, str] = {}
        self._ringing: dict[str, int | None] = {}  # human -> when their leg started ringing

    def __call__(self, record: dict[str, Any]) -> None:
        handler = getattr(self, f"_on_{record.get('event')}", None)
        if handler is not None:
            handler(record)
        elif self._room is not None:
            self._room.add_event(str(record.get("event")), self._plain(record))

    def _at(self, record: dict[str, Any], key: str = "at") -> int | None:
        value = record.get(key)
        return int(value * NS) if isinstance(value, int | float) else None

    def _on_room_started(self, record: dict[str, Any]) -> None:
        self._base = {
            "room": str(record.get("room", "")),
            "scenario": str(record.get("scenario", "")),
            "campaign": str(record.get("campaign", "")),
            "tenant": str(record.get("tenant", "")),
        }
        self._roles = {str(m["persona"]): str(m["role"]) for m in record.get("cast") or ()}
        self._room = self._tracer.start_span(
            "room",
            start_time=self._at(record),
            attributes={**self._base, "job_id": str(record.get("job_id", ""))},
        )
        # the room's task: sessions started after this (and their model spans) nest under it
        self._token = otel_context.attach(trace.set_span_in_context(self._room))

    def _child(self, name: str, record: dict[str, Any], start: int | None, **attrs: Any) -> None:
        if self._room is None:
            return
        persona = str(record.get("persona", ""))
        attributes = {
            **self._base,
            "persona": persona,
            "role": self._roles.get(persona, str(record.get("role", ""))),
            **{k: v for k, v in attrs.items() if v is not None},
        }
        ctx = trace.set_span_in_context(self._room)
        span = self._tracer.start_span(name, context=ctx, start_time=start, attributes=attributes)
        span.end(end_time=self._at(record))

    def _on_utterance(self, record: dict[str, Any]) -> None:
        latency = {
            f"latency.{k}": v
            for k, v in (record.get("latency") or {}).items()
            if isinstance(v, int | float)
        }
        self._child(
            "turn",
            record,
            self._at(record, "started"),
            turn=record.get("turn"),
            interrupted=bool(record.get("interrupted")),
            text=record.get("text") if self._content else None,
            **latency,
        )

    def _on_tool_call(self, record: dict[str, Any]) -> None:
        self._child(
            "tool_call",
            record,
            self._at(record),
            tool=str(record.get("tool", "")),
            is_error=bool(record.get("is_error")),
            args=str(record.get("args")) if self._content else None,
            output=str(record.get("output")) if self._content else None,
        )

    def _on_ring_leg(self, record: dict[str, Any]) -> None:
        """A transfer's leg to one person: a span from ringing to how it ended (answered,
        declined, timed out, cancelled, ...)."""
        human = str(record.get("human", ""))
        status = str(record.get("status", ""))
        if status == "ringing":
            self._ringing[human] = self._at(record)
            return
        self._child(
            "ring_leg",
            record,
            self._ringing.pop(human, self._at(record)),
            human_agent=human,
            status=status,
            sip_status_code=record.get("sip_status_code"),
            after_win_s=record.get("after_win_s"),
        )

    def _on_room_ended(self, record: dict[str, Any]) -> None:
        if self._room is None:
            return
        self._room.set_attributes(
            {"reason": str(record.get("reason", "")), "turns": int(record.get("turns") or 0)}
        )
        self._room.end(end_time=self._at(record))
        self._room = None
        if self._token is not None:
            try:
                otel_context.detach(self._token)  # type: ignore[arg-type]
            except ValueError:  # ended from another context (a cancelled task): harmless
                pass
            self._token = None

    def _plain(self, record: dict[str, Any]) -> dict[str, Any]:
        """An event's attributes: scalars only, and no words people said unless allowed."""
        content = {"text", "summary", "args", "output", "result", "message"}
        return {
            k: v
            for k, v in record.items()
            if k not in ("event", "at")
            and isinstance(v, str | int | float | bool)
            and (self._content or k not in content)
        }
