"""Roles and the tools each role's agent implements. The set of roles can grow: add it here
and give it a module in agents/."""

from __future__ import annotations

# A persona hands the caller to a person (workers/humans/transfer.py): a role tool like the
# others, so a tenant's tier gates it; every role but voicemail may list it (voicemail is where
# a transfer nobody answered ends up).
TRANSFER_TOOL = "transfer_to_human"

ROLE_TOOLS: dict[str, tuple[str, ...]] = {
    "dispatcher": ("lookup_load", "update_eta", "report_incident", TRANSFER_TOOL),
    "driver": ("report_status", "request_assistance", TRANSFER_TOOL),
    "sales": ("qualify_lead", "quote_price", TRANSFER_TOOL),
    "support": ("search_knowledge_base", "open_ticket", "lookup_ticket", TRANSFER_TOOL),
    "voicemail": ("take_message",),
}
ROLES: tuple[str, ...] = tuple(ROLE_TOOLS)

# Floor tools every persona has whatever its tenant: they change who speaks, not any data.
COMMON_TOOLS: tuple[str, ...] = ("end_conversation", "hand_over")

ALL_ROLE_TOOLS: frozenset[str] = frozenset(t for tools in ROLE_TOOLS.values() for t in tools)

# Offered to the lead persona only when the scenario's turn policy is `moderated`.
MODERATOR_TOOL = "next_speaker"
