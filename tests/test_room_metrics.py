"""The rooms' usage and latency on the worker's one `/metrics` (workers/room/room_metrics.py,
workers/main/metrics.py): a room run in a process of its own, as a job process runs it, with
the worker's PROMETHEUS_MULTIPROC_DIR; the real worker's endpoint then serves that room's
counters and histograms next to its own capacity gauges."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.catalog import Catalog
from config.settings import PROJECT_ROOT, Settings
from tests.conftest import SCENARIOS_DIR
from tests.test_worker_load_stats import free_port
from tests.test_worker_request import Recorder, handle, job_request
from tests.test_worker_shared_capacity import DISPATCH, _scrape, running_worker
from workers.room.room_metrics import REGISTRY, RoomMetrics
from workers.room.transcript import read_transcript

WHO = {"persona": "tim", "tenant": "acme-logistics", "campaign": "freight-dispatch"}


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.mark.integration
async def test_a_job_process_rooms_usage_and_latency_are_on_the_workers_metrics(
    tmp_path: Path, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    multiproc = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc))  # restored after the test
    port = free_port()
    settings = Settings(
        _env_file=None,
        scenarios_dir=SCENARIOS_DIR,
        transcripts_dir=tmp_path,
        stats_host="127.0.0.1",
        stats_port=0,
        prometheus_port=port,
        prometheus_multiproc_dir=multiproc,
        worker_http_port=free_port(),
    )
    async with running_worker(settings, catalog) as worker:
        await handle(worker, job_request(Recorder(), DISPATCH, job_id="AJ_m"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
        room = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "tests.voiced_room", str(tmp_path / "rooms")],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=True,
        )
        text = await asyncio.to_thread(_scrape, port)
    records = read_transcript(Path(room.stdout.strip().splitlines()[-1]))
    samples = _samples(text)
    # the worker's own gauges and counters are still there
    assert _value(samples, "persona_capacity", persona="tim", role="dispatcher") == 3.0
    assert _value(samples, "rooms_total", scenario="dispatch_checkin", outcome="accepted") == 1.0
    # the room's TTS usage, as its transcript's usage record has it
    (usage,) = [r for r in records if r["event"] == "usage" and r["persona"] == "tim"]
    (tts,) = [m for m in usage["models"] if m["kind"] == "tts"]
    assert tts["characters_count"] > 0
    assert _value(samples, "persona_tts_characters_total", **WHO, kind="tts") == float(
        tts["characters_count"]
    )
    seconds = _value(samples, "persona_audio_seconds_total", **WHO, kind="tts")
    assert seconds == pytest.approx(tts["audio_duration"])
    assert _value(samples, "persona_cost_total", **WHO, currency=usage["currency"]) == 0.0
    # each of tim's turns: its TTS time to first byte and the floor's gap observed once
    turns = [r for r in records if r["event"] == "utterance" and r["persona"] == "tim"]
    ttfb = [t["latency"]["tts_ttfb_s"] for t in turns if "tts_ttfb_s" in t["latency"]]
    assert ttfb
    assert _value(samples, "room_tts_ttfb_seconds_count", persona="tim") == len(ttfb)
    assert _value(samples, "room_tts_ttfb_seconds_sum", persona="tim") == pytest.approx(sum(ttfb))
    gaps = Counter(
        r["persona"]
        for r in records
        if r["event"] == "utterance" and r["latency"].get("floor_gap_s") is not None
    )
    for persona, n in gaps.items():
        assert _value(samples, "room_floor_gap_seconds_count", persona=persona) == n


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_usage_and_latency_records_are_counted_with_bounded_labels(catalog: Catalog) -> None:
    metrics = RoomMetrics(catalog)
    before = _sample("persona_tokens_total", **WHO, kind="llm", count="output_tokens")
    odd = {"persona": "not-a-persona", "tenant": "x" * 200, "campaign": "freight-dispatch"}
    before_odd = _sample(
        "persona_tokens_total",
        **{**odd, "persona": "other", "tenant": "other"},
        kind="other",
        count="output_tokens",
    )
    llm = {"kind": "llm", "output_tokens": 59, "input_tokens": 10, "made_up_tokens": 5}
    metrics({"event": "usage", **WHO, "models": [llm], "cost": 0.25, "currency": "USD"})
    metrics({"event": "usage", **odd, "models": [{"kind": "weird", "output_tokens": 3}]})
    metrics({"event": "human", "identity": "caller", "text": "hi", "latency": {"eou_delay_s": 0.4}})
    eou = _sample("room_end_of_utterance_delay_seconds_count", persona="")
    assert _sample("persona_tokens_total", **WHO, kind="llm", count="output_tokens") == before + 59
    assert _sample("persona_tokens_total", **WHO, kind="llm", count="made_up_tokens") == 0.0
    assert _sample("persona_cost_total", **WHO, currency="USD") >= 0.25
    other = {**odd, "persona": "other", "tenant": "other"}
    assert (
        _sample("persona_tokens_total", **other, kind="other", count="output_tokens")
        == before_odd + 3
    )
    assert eou >= 1
