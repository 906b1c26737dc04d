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
# The caller waits on hold while the person listens: 20-30 s of speech at the offline voice's
# 12-15 characters a second.
MAX_BRIEFING_CHARS = 360
DONE_SAID = 2  # the newest things done, each cut to DONE_CHARS
DONE_CHARS = 60
CLOSING = "Connecting you now."


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
    text = _cut(" ".join(str(output or "").split()), DONE_CHARS)
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
    digits = [c for c in notes.phone_number if c.isdigit()]
    if digits:
        # a whole number read out takes ~5 s (eSpeak says "+15550003101" as one number); the
        # person's phone shows it, the briefing names its last four digits one by one
        parts.append("on a number ending " + " ".join(digits[-4:]))
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
        f"{human_name}, a call from {persona_name}" + (f" at {company}." if company else "."),
        f"The caller is {_caller(context, notes)}.",
        f"They need a person: {reason.rstrip('.')}.",
        f"Summary: {summary.rstrip('.')}.",
    ]
    if notes.done:
        lines.append("What was done so far: " + "; ".join(notes.done[-DONE_SAID:]) + ".")
    else:
        lines.append("Nothing was done for them yet.")
    # what is cut is the end of what was said before the closing: the person always hears
    # that they are being connected
    body = _cut(" ".join(lines), MAX_BRIEFING_CHARS - len(CLOSING) - 1)
    return f"{body} {CLOSING}"


def _cut(text: str, limit: int) -> str:
    """`text`, or its words up to `limit` characters and "..." (never a word in half)."""
    if len(text) <= limit:
        return text
    return text[: limit - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."
