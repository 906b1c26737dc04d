"""Where a turn's time went, for its `utterance` record: the floor's gap before the turn and the
persona's model latencies as livekit measured them (`ChatMessage.metrics` of the reply)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from livekit.agents import llm

# livekit's per-message metric -> the transcript's name for it (seconds)
REPLY_METRICS = {
    "llm_node_ttft": "llm_ttft_s",
    "llm_node_ttfs": "llm_first_sentence_s",
    "tts_node_ttfb": "tts_ttfb_s",
}


def turn_latency(items: Iterable[Any], started: float, previous_end: float | None) -> dict:
    """`floor_gap_s`: from the end of the previous line to this turn's start (None for the
    first turn); then each model latency the reply's first assistant message carries."""
    out: dict[str, float | None] = {
        "floor_gap_s": None if previous_end is None else round(max(started - previous_end, 0), 4)
    }
    for item in items:
        if isinstance(item, llm.ChatMessage) and item.role == "assistant":
            metrics = item.metrics or {}
            for key, name in REPLY_METRICS.items():
                value = metrics.get(key)
                if isinstance(value, int | float):
                    out[name] = round(float(value), 4)
            break
    return out
