"""OpenTelemetry traces of rooms (workers/room/tracing.py): one trace per room with a span per
persona turn and tool call, livekit's own spans nested under it, nothing people said on a span
unless allowed, and a real export over OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from livekit.agents.telemetry import set_tracer_provider
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from config.scenario import load_scenario
from config.settings import Settings
from workers.room.tracing import RoomTrace, configure_tracing
from workers.simulate import simulate

SAID = "El Paso"  # words of a line in dispatch_checkin's script


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    set_tracer_provider(trace.NoOpTracerProvider())  # livekit's tracer back to no-op


async def _traced_room(catalog, scenarios_dir, tmp_path, exporter, *, content: bool):
    provider = configure_tracing(
        None,
        service="test",
        capture_content=content,
        exporter=exporter,
        processor=SimpleSpanProcessor,
    )
    assert provider is not None
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    settings = Settings(_env_file=None, transcripts_dir=tmp_path, openai_api_key=None)
    async with asyncio.timeout(30):
        result = await simulate(
            scenario, catalog, settings, listeners=[RoomTrace(provider, capture_content=content)]
        )
    provider.shutdown()
    return result, list(exporter.get_finished_spans())


def _attribute_text(spans: list[ReadableSpan]) -> str:
    parts = []
    for span in spans:
        parts.append(json.dumps(dict(span.attributes or {}), default=str))
        parts.extend(json.dumps(dict(e.attributes or {}), default=str) for e in span.events)
    return "\n".join(parts)


async def test_a_room_is_one_trace_with_a_span_per_turn_and_tool_call(
    catalog, scenarios_dir, tmp_path, spans
):
    result, finished = await _traced_room(catalog, scenarios_dir, tmp_path, spans, content=False)
    (room,) = [s for s in finished if s.name == "room"]
    assert room.parent is None
    assert dict(room.attributes or {}) == {
        "room": "sim-dispatch_checkin",
        "scenario": "dispatch_checkin",
        "campaign": "freight-dispatch",
        "tenant": "acme-logistics",
        "job_id": "",
        "reason": result.reason,
        "turns": result.turns,
    }
    assert {s.context.trace_id for s in finished} == {room.context.trace_id}
    turns = [s for s in finished if s.name == "turn"]
    assert [t.attributes["turn"] for t in turns] == list(range(1, result.turns + 1))
    assert {t.attributes["persona"] for t in turns} == {"tim", "chris"}
    assert all(t.parent.span_id == room.context.span_id for t in turns)
    assert all(t.start_time <= t.end_time for t in turns)
    tools = [s for s in finished if s.name == "tool_call"]
    assert {t.attributes["tool"] for t in tools} >= {"lookup_load", "report_status"}
    # livekit's own spans of the personas' sessions and model calls are in the room's trace
    names = {s.name for s in finished}
    assert {"agent_session", "llm_request"} <= names
    assert SAID not in _attribute_text(finished)


async def test_what_people_said_is_on_spans_only_when_allowed(
    catalog, scenarios_dir, tmp_path, spans
):
    _, finished = await _traced_room(catalog, scenarios_dir, tmp_path, spans, content=True)
    turns = [s for s in finished if s.name == "turn"]
    assert any(SAID in str(t.attributes.get("text", "")) for t in turns)


def test_no_endpoint_means_no_tracing():
    assert configure_tracing(None, service="test") is None
    assert configure_tracing("", service="test") is None


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: keeps each decoded export request."""

    received: list[ExportTraceServiceRequest] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        type(self).received.append((self.path, request))  # type: ignore[arg-type]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list]]:
    _Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Receiver.received
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_simulate_exports_the_rooms_trace_over_otlp_http(otlp_receiver, tmp_path):
    """`python -m workers.simulate` with OTEL_EXPORTER_OTLP_ENDPOINT sends the room's spans to
    the receiver before it exits."""
    import os
    import subprocess
    import sys

    endpoint, received = otlp_receiver
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OTEL_"))},
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "TRANSCRIPTS_DIR": str(tmp_path),
        "AGENT_NAME": "trace-test",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "workers.simulate", "dispatch_checkin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert received and {path for path, _ in received} == {"/v1/traces"}
    names: set[str] = set()
    services: set[str] = set()
    for _, request in received:
        for resource_spans in request.resource_spans:
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    services.add(attr.value.string_value)
            for scope in resource_spans.scope_spans:
                names.update(span.name for span in scope.spans)
    assert services == {"trace-test"}
    assert {"room", "turn", "tool_call", "agent_session"} <= names


def test_each_ring_leg_of_a_transfer_is_a_span_from_ringing_to_its_outcome(spans):
    provider = configure_tracing(
        None, service="test", exporter=spans, processor=SimpleSpanProcessor
    )
    assert provider is not None
    room = RoomTrace(provider)
    room({"event": "room_started", "room": "r", "tenant": "brightcart", "at": 10.0, "cast": []})
    room({"event": "transfer_requested", "persona": "alex", "rung": "nina,omar", "at": 11.0})
    for human in ("nina", "omar"):
        room({"event": "ring_leg", "human": human, "status": "ringing", "at": 11.5})
    room({"event": "ring_leg", "human": "nina", "status": "answered", "at": 14.5})
    room(
        {
            "event": "ring_leg",
            "human": "omar",
            "status": "cancelled",
            "after_win_s": 0.03,
            "sip_status_code": None,
            "at": 14.53,
        }
    )
    room({"event": "hand_over_human", "from_persona": "alex", "human": "nina", "at": 40.0})
    room({"event": "room_ended", "reason": "humans_left", "turns": 2, "at": 90.0})
    provider.shutdown()
    finished = {s.name: s for s in spans.get_finished_spans() if s.name != "ring_leg"}
    legs = {
        s.attributes["human_agent"]: s for s in spans.get_finished_spans() if s.name == "ring_leg"
    }
    assert {h: legs[h].attributes["status"] for h in legs} == {
        "nina": "answered",
        "omar": "cancelled",
    }
    assert (legs["nina"].end_time - legs["nina"].start_time) / 1e9 == pytest.approx(3.0)
    assert legs["omar"].attributes["after_win_s"] == 0.03
    assert "sip_status_code" not in legs["omar"].attributes  # unknown: left off, not null
    assert all(leg.parent.span_id == finished["room"].context.span_id for leg in legs.values())
    assert [e.name for e in finished["room"].events] == ["transfer_requested", "hand_over_human"]
