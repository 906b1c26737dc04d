"""Dispatcher: knows the loads, keeps their ETAs current, logs delays and incidents."""

from __future__ import annotations

from typing import Annotated

from agents.persona import PersonaAgent
from agents.tool_args import (
    MAX_SHORT_CHARS,
    MAX_TEXT_CHARS,
    as_output,
    enum_schema,
    one_of,
    optional_text,
    parse_instant,
    require_text,
)

BRIEF = """
You run dispatch for the freight loads in this room. Confirm load numbers against the load
board before you talk about them, keep each load's ETA current the moment it changes, log
every delay or incident you hear about, and close each check-in with the next step.
"""

INCIDENT_KINDS = ("delay", "breakdown", "accident", "weather", "other")
IncidentKind = Annotated[str, enum_schema(INCIDENT_KINDS)]


class DispatcherAgent(PersonaAgent, role="dispatcher", brief=BRIEF):
    async def lookup_load(self, load_id: str) -> str:
        """Look a load up on the load board: route, cargo, driver, ETA, status, incidents.

        Args:
            load_id: the load number, e.g. HDX-2478
        """
        return as_output(self.find_load(load_id))

    async def update_eta(self, load_id: str, eta: str, reason: str = "") -> str:
        """Change a load's ETA on the load board.

        Args:
            load_id: the load number
            eta: the new ETA as an ISO-8601 date-time with a time zone, e.g. 2026-11-21T19:15:00Z
            reason: why the ETA changed
        """
        load = self.find_load(load_id)
        new_eta = parse_instant("eta", eta)
        why = optional_text("reason", reason, max_len=MAX_SHORT_CHARS)
        args = {"load_id": load["id"], "eta": new_eta, "reason": why}
        result = {**args, "previous_eta": load.get("eta")}
        load["eta"] = new_eta
        return self.record("update_eta", args, result)

    async def report_incident(self, load_id: str, kind: IncidentKind, description: str) -> str:
        """Log a delay or an incident on a load.

        Args:
            load_id: the load number
            kind: what happened
            description: what happened, where, and its effect on the delivery
        """
        load = self.find_load(load_id)
        args = {
            "load_id": load["id"],
            "kind": one_of("kind", kind, INCIDENT_KINDS),
            "description": require_text("description", description, max_len=MAX_TEXT_CHARS),
        }
        incident = {"id": self.room_data.next_id("INC"), **args}
        load.setdefault("incidents", []).append(incident)
        if args["kind"] == "delay":
            load["status"] = "delayed"
        return self.record("report_incident", args, {**incident, "status": load.get("status")})
