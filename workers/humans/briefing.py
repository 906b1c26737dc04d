"""What the person taking a transferred call hears first, in private: who the caller is, what
they need, and what was done, read from the room's own transcript as it is written.

`RoomNotes` is a transcript listener (workers/room/transcript.py `subscribe`): it keeps the
few records a briefing needs (the phone call, the tools the personas ran),
so the briefing is built from what happened in the room, not from what a model remembers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_LINES = 20  # a briefing is a few sentences: the newest tool calls
MAX_BRIEFING_CHARS = 1200  # about a minute of speech


@dataclass
class RoomNotes:
    """The transcript records a briefing is made from (a Transcript listener)."""

    phone_number: str = ""
    done: list[str] = field(default_factory=list)  # "Alex ran open_ticket" lines

    def __call__(self, record: Mapping[str, Any]) -> None:
        event = record.get("event")
        if event == "call" and record.get("direction") == "inbound" and not self.phone_number:
            self.phone_number = str(record.get("phone_number") or "")
        elif event == "tool_call" and not record.get("is_error"):
            tool = str(record.get("tool") or "")
            if tool and tool not in _FLOOR_TOOLS:
                self.done = [*self.done, _did(tool, record.get("output"))][-MAX_LINES:]


# what changes who speaks is not something "done" for the caller
_FLOOR_TOOLS = frozenset({"hand_over", "end_conversation", "next_speaker", "transfer_to_human"})


def _did(tool: str, output: Any) -> str:
    text = " ".join(str(output or "").split())
    if len(text) > 160:
        text = text[:157] + "..."
    return f"{tool.replace('_', ' ')}: {text}" if text else tool.replace("_", " ")


def _caller(context: Mapping[str, Any], notes: RoomNotes) -> str:
    caller = context.get("caller")
    parts: list[str] = []
    if isinstance(caller, Mapping):
        parts += [str(caller[k]) for k in ("name", "account") if caller.get(k)]
    elif isinstance(caller, str) and caller:
        parts.append(caller)
    contact = context.get("contact")
    if contact and str(contact) not in parts:
        parts.append(f"contact {contact}")
    if notes.phone_number:
        parts.append(f"calling from {notes.phone_number}")
    return ", ".join(parts) or "a caller we have no name for"


def briefing_text(
    *,
    human_name: str,
    persona_name: str,
    company: str,
    context: Mapping[str, Any],
    reason: str,
    summary: str,
    notes: RoomNotes,
) -> str:
    """The briefing, spoken to the person who won the call before the caller hears them."""
    lines = [
        f"Hello {human_name}, this is {persona_name}"
        + (f" at {company}" if company else "")
        + ", with a call for you.",
        f"The caller is {_caller(context, notes)}.",
        f"They need a person because: {reason.rstrip('.')}.",
        f"Summary: {summary.rstrip('.')}.",
    ]
    if notes.done:
        lines.append("What was done so far: " + "; ".join(notes.done[-4:]) + ".")
    else:
        lines.append("Nothing was done for them yet.")
    lines.append("Connecting you now.")
    text = " ".join(lines)
    return text if len(text) <= MAX_BRIEFING_CHARS else text[: MAX_BRIEFING_CHARS - 3] + "..."
