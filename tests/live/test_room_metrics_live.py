"""The worker's one `/metrics` on the real server: a room its job process ran shows there (usage
counters, latency histograms, written by the job process in livekit's multiprocess mode) next
to the main process's capacity gauges."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live.harness import WorkerProcess, dispatch, server_api, transcript_of, unique
from tests.live.test_port_floods import listening_port

pytestmark = pytest.mark.live


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_a_rooms_usage_and_latency_from_its_job_process_are_on_metrics(
    tmp_path: Path, workers: list[WorkerProcess]
):
    worker = WorkerProcess.start(tmp_path, agent_name=unique("metrics"), PROMETHEUS_PORT="0")
    workers.append(worker)
    await worker.ready()
    port = listening_port(worker, "prometheus")
    room = unique("metered")
    async with server_api() as lk:
        await dispatch(lk, worker.agent_name, room, json.dumps({"scenario": "dispatch_checkin"}))
    events = await transcript_of(worker, room, timeout=180)
    samples = await asyncio.to_thread(_scrape, port)
    who = {"persona": "tim", "tenant": "acme-logistics", "campaign": "freight-dispatch"}
    (usage,) = [e for e in events if e["event"] == "usage" and e["persona"] == "tim"]
    (tts,) = [m for m in usage["models"] if m["kind"] == "tts"]
    key = frozenset({**who, "kind": "tts"}.items())
    assert samples[("persona_tts_characters_total", key)] == tts["characters_count"] > 0
    turns = [e for e in events if e["event"] == "utterance" and e["persona"] == "tim"]
    ttfb = [t for t in turns if "tts_ttfb_s" in t["latency"]]
    count = samples[("room_tts_ttfb_seconds_count", frozenset({"persona": "tim"}.items()))]
    assert count == len(ttfb) > 0
    capacity = frozenset({"persona": "tim", "role": "dispatcher"}.items())
    assert samples[("persona_capacity", capacity)] == 3.0
