"""Personas: the base agent, one module per role with its tools, the room's data and outcome,
and model construction (OpenAI plugins, or the offline scripted model).

Importing the package registers every role module, so `build_agent` and `ROLE_BRIEFS` know
all roles. May import config/ and livekit, never workers/ or tests/. Model construction
(`agents.models`, `agents.offline`) is imported from its own modules, not here: the worker's
main process imports the roles but runs no model, so it never loads the model plugins.
"""

from __future__ import annotations

from agents.dispatcher import DispatcherAgent
from agents.driver import DriverAgent
from agents.instructions import ROLE_BRIEFS, build_instructions
from agents.outcome import Outcome, OutcomeEntry
from agents.persona import (
    EndRequest,
    FloorRequests,
    HandOverRequest,
    NextSpeakerRequest,
    PersonaAgent,
    RecordingFloor,
    build_agent,
)
from agents.room_data import ReferenceData, RoomData, load_reference
from agents.sales import SalesAgent
from agents.support import SupportAgent
from agents.voicemail import VoicemailAgent

__all__ = [
    "ROLE_BRIEFS",
    "DispatcherAgent",
    "DriverAgent",
    "EndRequest",
    "FloorRequests",
    "HandOverRequest",
    "NextSpeakerRequest",
    "Outcome",
    "OutcomeEntry",
    "PersonaAgent",
    "RecordingFloor",
    "ReferenceData",
    "RoomData",
    "SalesAgent",
    "SupportAgent",
    "VoicemailAgent",
    "build_agent",
    "build_instructions",
    "load_reference",
]
