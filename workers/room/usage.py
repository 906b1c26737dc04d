"""What each persona of a room used and what it cost: one `usage` record per persona, written
to the transcript when the room ends.

The counts are livekit's own (`AgentSession.usage`: one entry per model the session used,
summed from the metrics events its LLM, TTS and STT emit); the prices are the catalog's
(config/prices.py). A paid model with no price makes the persona's cost partial: the record
lists it under `unpriced` and its own cost is null.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from livekit.agents import AgentSession

from config.catalog import Catalog
from config.prices import usage_cost
from config.scenario import Scenario
from workers.room.seat import Seat

# livekit's usage `type` -> the kind of model it counts
KINDS = {
    "llm_usage": "llm",
    "tts_usage": "tts",
    "stt_usage": "stt",
    "interruption_usage": "interruption",
    "eot_usage": "end_of_turn",
}


def model_usage(session: AgentSession) -> list[dict[str, Any]]:
    """The session's usage per model: kind, provider, model and every count above zero."""
    out = []
    for usage in session.usage.model_usage:
        counts = usage.model_dump()
        kind = KINDS.get(counts.pop("type", ""), "other")
        entry: dict[str, Any] = {"kind": kind}
        entry.update({k: v for k, v in counts.items() if isinstance(v, str) or v})
        out.append(entry)
    return out


def usage_records(
    seated: Iterable[tuple[Seat, AgentSession]], scenario: Scenario, catalog: Catalog
) -> list[dict[str, Any]]:
    """One record per persona: who (persona, role, tenant, campaign), what each model used and
    cost, and the persona's total in the catalog's currency."""
    tenant = catalog.tenant_of(scenario.campaign).id
    prices = catalog.prices
    records = []
    for seat, session in seated:
        models = model_usage(session)
        unpriced = []
        total = 0.0
        for entry in models:
            cost = usage_cost(entry, prices)
            entry["cost"] = cost
            if cost is None:
                unpriced.append(f"{entry.get('provider', '')}/{entry.get('model', '')}")
            else:
                total += cost
        records.append(
            {
                "persona": seat.persona.id,
                "role": seat.slot.role,
                "tenant": tenant,
                "campaign": scenario.campaign,
                "models": models,
                "cost": round(total, 9),
                "currency": prices.currency,
                "unpriced": unpriced,
            }
        )
    return records
