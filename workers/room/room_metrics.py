"""A room's usage and latency as Prometheus counters and histograms, from its transcript records.

Rooms run in livekit's job processes. With PROMETHEUS_MULTIPROC_DIR set in their environment
(the worker sets it when PROMETHEUS_PORT is set: workers/multi.py), prometheus_client writes
these to a file per process, and the main process's `/metrics` serves them summed over every
job, dead ones included, next to its own gauges (workers/main/metrics.py). Without it (the
local stage, `simulate`) they only count in this process.

Every label is bounded: persona, tenant and campaign are the catalog's ids (anything else is
`other`), `kind` one of the model kinds of workers/room/usage.py, `count` one of livekit's
usage fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

from config.catalog import Catalog
from workers.room.usage import KINDS

OTHER = "other"
# seconds: from tens of milliseconds (a model answering at once) to a slow first audio
BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_USAGE_LABELS = ("persona", "tenant", "campaign", "kind")
# livekit's usage fields (livekit.agents.metrics.usage) that count tokens
TOKEN_COUNTS = frozenset(
    {
        "input_tokens",
        "input_cached_tokens",
        "input_cache_creation_tokens",
        "input_audio_tokens",
        "input_cached_audio_tokens",
        "input_text_tokens",
        "input_cached_text_tokens",
        "input_image_tokens",
        "input_cached_image_tokens",
        "output_tokens",
        "output_audio_tokens",
        "output_text_tokens",
        "output_reasoning_tokens",
    }
)
# the transcript's latency name -> its histogram
_LATENCIES = {
    "eou_delay_s": ("room_end_of_utterance_delay_seconds", "End of a human's speech to its text"),
    "llm_ttft_s": ("room_llm_ttft_seconds", "A persona's LLM time to first token"),
    "tts_ttfb_s": ("room_tts_ttfb_seconds", "A persona's TTS time to first audio"),
    "floor_gap_s": ("room_floor_gap_seconds", "End of one line to the start of the next turn"),
}

# A registry of their own: never the main process's default one (where the main process would
# show empty copies of them next to the jobs' files).
REGISTRY = CollectorRegistry(auto_describe=True)
TOKENS = Counter(
    "persona_tokens",
    "Model tokens a persona used, by livekit's usage field",
    [*_USAGE_LABELS, "count"],
    registry=REGISTRY,
)
CHARACTERS = Counter(
    "persona_tts_characters",
    "Characters a persona's TTS spoke",
    list(_USAGE_LABELS),
    registry=REGISTRY,
)
AUDIO_SECONDS = Counter(
    "persona_audio_seconds",
    "Seconds of audio a persona's TTS made or STT heard",
    list(_USAGE_LABELS),
    registry=REGISTRY,
)
COST = Counter(
    "persona_cost",
    "What a persona's models cost, at the catalog's prices (unpriced models count 0)",
    ["persona", "tenant", "campaign", "currency"],
    registry=REGISTRY,
)
ROOM_LATENCY = {
    name: Histogram(metric, doc, ["persona"], buckets=BUCKETS, registry=REGISTRY)
    for name, (metric, doc) in _LATENCIES.items()
}


class RoomMetrics:
    """A transcript listener: each `usage` record counted, each turn's latencies observed."""

    def __init__(self, catalog: Catalog) -> None:
        self._personas = frozenset(p.id for p in catalog.personas)
        self._tenants = frozenset(t.id for t in catalog.tenants)
        self._campaigns = frozenset(c.id for c in catalog.campaigns)
        self._currencies = frozenset({catalog.prices.currency})
        self._kinds = frozenset(KINDS.values())

    def __call__(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        if event == "usage":
            self._usage(record)
        elif event in ("utterance", "human"):
            # a human's line has no persona: its end-of-utterance delay is the room's
            persona = (
                self._label(record.get("persona"), self._personas) if event == "utterance" else ""
            )
            self._latency(persona, record.get("latency") or {})

    @staticmethod
    def _label(value: Any, known: frozenset[str]) -> str:
        return value if isinstance(value, str) and value in known else OTHER

    def _usage(self, record: dict[str, Any]) -> None:
        who = (
            self._label(record.get("persona"), self._personas),
            self._label(record.get("tenant"), self._tenants),
            self._label(record.get("campaign"), self._campaigns),
        )
        for entry in _entries(record.get("models")):
            labels = (*who, self._label(entry.get("kind"), self._kinds))
            for count, value in entry.items():
                if count in TOKEN_COUNTS and _positive(value):
                    TOKENS.labels(*labels, count).inc(value)
            if _positive(entry.get("characters_count")):
                CHARACTERS.labels(*labels).inc(entry["characters_count"])
            if _positive(entry.get("audio_duration")):
                AUDIO_SECONDS.labels(*labels).inc(entry["audio_duration"])
        cost = record.get("cost")
        if isinstance(cost, int | float) and cost >= 0:
            COST.labels(*who, self._label(record.get("currency"), self._currencies)).inc(cost)

    @staticmethod
    def _latency(persona: str, latency: Mapping[str, Any]) -> None:
        for name, histogram in ROOM_LATENCY.items():
            value = latency.get(name)
            if isinstance(value, int | float) and value >= 0:
                histogram.labels(persona).observe(value)


def _entries(models: Any) -> Iterable[dict[str, Any]]:
    return [m for m in models if isinstance(m, dict)] if isinstance(models, list) else []


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
