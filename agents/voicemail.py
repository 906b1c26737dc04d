"""Voicemail: when every persona is busy, takes the caller's name, number and message."""

from __future__ import annotations

from agents.persona import PersonaAgent
from agents.tool_args import (
    MAX_NAME_CHARS,
    MAX_TEXT_CHARS,
    parse_phone,
    require_text,
)

BRIEF = """
Everyone who could help is busy. Greet the caller, take their name, callback number and
message, read the number back digit by digit, save the message, and end the call politely.
"""


class VoicemailAgent(PersonaAgent, role="voicemail", brief=BRIEF):
    async def take_message(self, caller_name: str, callback_number: str, message: str) -> str:
        """Save the caller's message for a callback.

        Args:
            caller_name: the caller's name
            callback_number: the number to call back in international form, e.g. +1 555 010 2030
            message: what the caller wants, in their words
        """
        args = {
            "caller_name": require_text("caller_name", caller_name, max_len=MAX_NAME_CHARS),
            "callback_number": parse_phone("callback_number", callback_number),
            "message": require_text("message", message, max_len=MAX_TEXT_CHARS),
        }
        saved = {"message_id": self.room_data.next_id("MSG"), **args, "status": "saved"}
        return self.record("take_message", args, saved)
