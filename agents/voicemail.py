"""Voicemail: when every persona is busy, takes the caller's name, number and message."""

from __future__ import annotations

import re

from livekit.agents.llm import ToolError

from agents.persona import PersonaAgent, require_text

BRIEF = """
Everyone who could help is busy. Greet the caller, take their name, callback number and
message, read the number back digit by digit, save the message, and end the call politely.
"""

MIN_DIGITS, MAX_DIGITS = 7, 15  # E.164 allows at most 15 digits


def _phone(value: str) -> str:
    """Normalise a callback number ("+1 (555) 010-2030" -> "+15550102030") or refuse it."""
    text = value.strip()
    digits = re.sub(r"\D", "", text)
    if re.search(r"[^\d\s+().-]", text) or not MIN_DIGITS <= len(digits) <= MAX_DIGITS:
        raise ToolError(
            f"callback_number must be a phone number with {MIN_DIGITS} to {MAX_DIGITS} digits "
            f"(got {value!r})"
        )
    return ("+" if text.startswith("+") else "") + digits


class VoicemailAgent(PersonaAgent, role="voicemail", brief=BRIEF):
    async def take_message(self, caller_name: str, callback_number: str, message: str) -> str:
        """Save the caller's message for a callback.

        Args:
            caller_name: the caller's name
            callback_number: the number to call back, e.g. +1 555 010 2030
            message: what the caller wants, in their words
        """
        args = {
            "caller_name": require_text("caller_name", caller_name, max_len=200),
            "callback_number": _phone(callback_number),
            "message": require_text("message", message),
        }
        saved = {"message_id": self.room.next_id("MSG"), **args, "status": "saved"}
        return self.record("take_message", args, saved)
