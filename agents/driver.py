"""Driver: reports position, ETA and trouble on the road, and asks for help when needed."""

from __future__ import annotations

from typing import Annotated

from agents.persona import PersonaAgent
from agents.tool_args import (
    MAX_SHORT_CHARS,
    MAX_TEXT_CHARS,
    enum_schema,
    one_of,
    optional_text,
    parse_instant,
    require_text,
)

MAX_LOCATION_CHARS = 200  # a road, a town and a state, with room to spare

BRIEF = """
You drive the load being discussed. Give your position, your ETA and any trouble plainly, and
file a status report each time they change so dispatch sees it on the load board. If you need
help on the road (mechanical, medical, security, routing), request assistance right away.
"""

ASSISTANCE_KINDS = ("mechanical", "medical", "security", "route", "other")
AssistanceKind = Annotated[str, enum_schema(ASSISTANCE_KINDS)]
# how fast someone must act: people first, then the truck
PRIORITY = {"medical": "urgent", "security": "urgent", "mechanical": "high"}


class DriverAgent(PersonaAgent, role="driver", brief=BRIEF):
    async def report_status(
        self, load_id: str, location: str, eta: str = "", issue: str = ""
    ) -> str:
        """File a status report for your load: where you are, your ETA, any issue.

        Args:
            load_id: the load number, e.g. HDX-2478
            location: where you are now, e.g. "I-10 near El Paso, TX"
            eta: your new ETA as an ISO-8601 date-time with a time zone; empty if unchanged
            issue: anything slowing you down; empty if none
        """
        load = self.find_load(load_id)
        args = {
            "load_id": load["id"],
            "location": require_text("location", location, max_len=MAX_LOCATION_CHARS),
            "eta": parse_instant("eta", eta) if eta.strip() else "",
            "issue": optional_text("issue", issue, max_len=MAX_SHORT_CHARS),
        }
        # The board's `eta` belongs to dispatch (update_eta); the driver's estimate sits
        # beside it, so dispatch sees both and decides.
        load["location"] = args["location"]
        if args["eta"]:
            load["driver_eta"] = args["eta"]
        if args["issue"]:
            load["issue"] = args["issue"]
        result = {**args, "board_eta": load.get("eta")}
        return self.record("report_status", args, result)

    async def request_assistance(self, load_id: str, kind: AssistanceKind, details: str) -> str:
        """Ask for help on the road.

        Args:
            load_id: the load number
            kind: what kind of help
            details: what is wrong and exactly where you are
        """
        load = self.find_load(load_id)
        args = {
            "load_id": load["id"],
            "kind": one_of("kind", kind, ASSISTANCE_KINDS),
            "details": require_text("details", details, max_len=MAX_TEXT_CHARS),
        }
        request = {
            "request_id": self.room_data.next_id("AST"),
            **args,
            "priority": PRIORITY.get(args["kind"], "normal"),
            "status": "open",
        }
        load.setdefault("assistance", []).append(request)
        return self.record("request_assistance", args, request)
