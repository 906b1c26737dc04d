"""A room's request and its plan. In: the dispatch's job metadata (untrusted), read as a
scenario that is checked against the catalog. Out: what the main process decided for the room,
a `JobPlan`, handed to the job's process in a private file (workers/job/plan_handoff.py).

The main process casts the room (that is where the selector and its load live), writes the
plan's hand-off text before it accepts, and the job process reads it back with
`JobPlan.from_handoff`, checking it against its own catalog. The plan carries the scenario
itself, so the job never resolves a name again and runs exactly what was cast.

The plan has no size limit of its own: a file has none to fit, and the plan is bounded by
what it is made of (a scenario from a file of at most 256 KiB or from job metadata of at most
`MAX_METADATA_BYTES`, and one member per cast slot).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from config import jsonio
from config.catalog import Catalog, Persona
from config.errors import ConfigError, ScenarioError, printable
from config.scenario import (
    CastSlot,
    Scenario,
    check_scenario,
    is_scenario_name,
    load_scenario,
    scenario_from_data,
)
from workers.room.seat import Seat

if TYPE_CHECKING:
    from workers.capacity.selector import Cast

NAME_FORM_FIELDS = ("scenario", "campaign", "inbound")
PLAN_VERSION = 1
# A dispatch's job metadata stays under LiveKit's default metadata limit; shipped scenarios
# are a few KB.
MAX_METADATA_BYTES = 64 * 1024
VOICEMAIL_ROLE = "voicemail"


# -- dispatch metadata -> scenario (main process, untrusted input) ---------------------------


class BadMetadata(ValueError):
    """Job metadata this worker cannot run. `problem` is a short code for logs and tests."""

    def __init__(self, problem: str, detail: str) -> None:
        detail = printable(detail)  # logged: must never fail to encode
        super().__init__(f"{problem}: {detail}")
        self.problem = problem
        self.detail = detail


def _short(value: object, limit: int = 80) -> str:
    """A value for an error message: repr, cut so a huge input is not echoed in full."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class RoomRequest:
    scenario: Scenario
    source: str
    inbound: bool = False


def parse_job_metadata(text: str, *, catalog: Catalog, scenarios_dir: Path) -> RoomRequest:
    """An inline scenario (a JSON object with "cast") or `{"scenario": NAME, "campaign": ...,
    "inbound": true}`. Names resolve only inside `scenarios_dir`. The scenario is checked
    against the catalog. Raises BadMetadata."""
    if not text.strip():
        raise BadMetadata(
            "empty", 'no scenario: dispatch with metadata {"scenario": NAME} or an inline scenario'
        )
    # surrogatepass: a lone surrogate must reach the loader's clear error, not crash here
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        raise BadMetadata("too_large", f"{size} bytes (limit {MAX_METADATA_BYTES})")
    try:
        data = jsonio.loads(text)
    except jsonio.JsonInputError as e:
        raise BadMetadata("not_json", f"job metadata: {e.problem.render()}") from None
    if not isinstance(data, dict):
        raise BadMetadata("not_object", f"expected a JSON object, got {type(data).__name__}")
    if "cast" in data:
        request = _inline(data)
    elif "scenario" in data:
        request = _named(data, scenarios_dir)
    else:
        raise BadMetadata(
            "no_scenario", 'expected an inline scenario (with "cast") or {"scenario": NAME}'
        )
    try:
        check_scenario(request.scenario, catalog, request.source)
    except ScenarioError as e:
        raise BadMetadata("scenario_not_in_catalog", str(e)) from None
    return request


def _inline(data: dict[str, Any]) -> RoomRequest:
    try:
        return RoomRequest(scenario_from_data(data, "job metadata"), "inline scenario")
    except ScenarioError as e:
        raise BadMetadata("invalid_scenario", str(e)) from None


def _named(data: dict[str, Any], scenarios_dir: Path) -> RoomRequest:
    unknown = sorted(set(data) - set(NAME_FORM_FIELDS))
    if unknown:
        raise BadMetadata(
            "unknown_field", f"{', '.join(unknown)} (allowed: {', '.join(NAME_FORM_FIELDS)})"
        )
    name = data["scenario"]
    if not isinstance(name, str) or not is_scenario_name(name):
        # Only bare names: no paths, so nothing can leave SCENARIOS_DIR.
        raise BadMetadata(
            "bad_scenario_name",
            f"{_short(name)} is not a scenario name in SCENARIOS_DIR "
            "(letters, digits, _ and -, at most 64)",
        )
    try:
        scenario = load_scenario(name, scenarios_dir=scenarios_dir, allow_outside=False)
    except ScenarioError as e:
        no_such = any(p.message == "no such scenario" for p in e.problems)
        raise BadMetadata("unknown_scenario" if no_such else "invalid_scenario", str(e)) from None
    campaign = data.get("campaign")
    if campaign is not None:
        if not isinstance(campaign, str) or not campaign:
            raise BadMetadata(
                "bad_campaign", f"campaign must be a campaign id, got {_short(campaign)}"
            )
        scenario = scenario.model_copy(update={"campaign": campaign})
    inbound = data.get("inbound", False)
    if not isinstance(inbound, bool):
        raise BadMetadata("bad_inbound", f"inbound must be true or false, got {_short(inbound)}")
    return RoomRequest(scenario, f"scenario {name}", inbound)


# -- the plan (main process -> job process, by file) ----------------------------------------


class PlanError(ValueError):
    """The plan handed to the job cannot be run; the message says what and why."""


class PlanMember(NamedTuple):
    role: str
    persona_id: str
    reason: str
    required: bool


@dataclass(frozen=True)
class JobPlan:
    """The scenario and its cast. `job_member` is the opener, the job's own participant on the
    LiveKit stage (the identity accept gave); the `others` join with tokens of their own."""

    scenario: Scenario
    job_member: PlanMember
    others: tuple[PlanMember, ...] = ()
    voicemail: bool = False
    personas: Mapping[str, Persona] = field(default_factory=dict, compare=False, repr=False)

    @property
    def members(self) -> tuple[PlanMember, ...]:
        """Every member, the job's own first."""
        return (self.job_member, *self.others)

    @property
    def job_persona(self) -> Persona:
        return self.personas[self.job_member.persona_id]

    @classmethod
    def from_cast(cls, scenario: Scenario, cast: Cast, *, voicemail: bool = False) -> JobPlan:
        opener = scenario.opener_slot.role
        members = [
            PlanMember(m.slot.role, m.persona.id, m.reason, m.slot.required) for m in cast.members
        ]
        return cls(
            scenario=scenario,
            job_member=next(m for m in members if m.role == opener),
            others=tuple(m for m in members if m.role != opener),
            voicemail=voicemail,
            personas={m.persona.id: m.persona for m in cast.members},
        )

    def to_handoff(self) -> str:
        """The plan as the main process writes it for the job (JSON; the job's own member
        first)."""
        data = {
            "v": PLAN_VERSION,
            "scenario": self.scenario.model_dump(mode="json", exclude_defaults=True),
            "members": [list(m) for m in self.members],
            "voicemail": self.voicemail,
        }
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_handoff(cls, text: str, catalog: Catalog) -> JobPlan:
        """The plan the main process handed over, parsed and checked; PlanError says what is
        wrong (e.g. a persona the job's catalog does not know: the worker and the job read
        different catalogs)."""
        try:
            data = jsonio.loads(text)
        except jsonio.JsonInputError as e:
            raise PlanError(
                f"job plan is not JSON a worker wrote ({e.problem.render()}); "
                "was the job accepted by this worker?"
            ) from None
        if not isinstance(data, dict) or data.get("v") != PLAN_VERSION:
            raise PlanError(f"job plan is not a version {PLAN_VERSION} plan object")
        try:
            scenario = scenario_from_data(data.get("scenario"), "job plan")
            check_scenario(scenario, catalog, "job plan")
        except ConfigError as e:
            raise PlanError(str(e)) from None
        slots = {s.role: s for s in scenario.cast}
        members: list[PlanMember] = []
        raw_members = data.get("members") or []
        if not isinstance(raw_members, list):
            raise PlanError(
                "job plan: $.members is not a list of [role, persona, reason, required]"
            )
        for i, raw in enumerate(raw_members):
            if not (isinstance(raw, list) and len(raw) == 4):
                raise PlanError(f"job plan member {i} is not [role, persona, reason, required]")
            member = PlanMember(str(raw[0]), str(raw[1]), str(raw[2]), bool(raw[3]))
            slot = slots.get(member.role)
            if slot is None:
                raise PlanError(
                    f"job plan member {i}: role {_short(member.role)} is not in the cast"
                )
            if member.persona_id not in catalog.persona_by_id:
                raise PlanError(
                    f"job plan member {i}: unknown persona {_short(member.persona_id)} "
                    "(the worker and the job read different catalogs?)"
                )
            if slot.persona is not None and slot.persona != member.persona_id:
                raise PlanError(
                    f"job plan member {i}: {member.persona_id!r} in a slot pinned to "
                    f"{slot.persona!r}"
                )
            members.append(member)
        if not members:
            raise PlanError("job plan has no members")
        roles = [m.role for m in members]
        if len(set(roles)) != len(roles):
            raise PlanError("job plan fills a role twice")
        missing = [s.role for s in scenario.cast if s.required and s.role not in roles]
        if missing:
            raise PlanError(f"job plan leaves required roles empty: {', '.join(missing)}")
        if roles[0] != scenario.opener_slot.role:
            raise PlanError("job plan's first member is not the opener")
        return cls(
            scenario=scenario,
            job_member=members[0],
            others=tuple(members[1:]),
            voicemail=bool(data.get("voicemail")),
            personas={m.persona_id: catalog.persona(m.persona_id) for m in members},
        )

    def seats(self, room: str, *, job_id: str = "", job_identity: str = "") -> list[Seat]:
        """One seat per member, with the identities of this job's participants. The job's own
        member's identity is `job_identity` when given (what the job actually joined as), else
        the same `persona_identity` accept used."""
        slots = {s.role: s for s in self.scenario.cast}
        return [
            Seat.in_room(
                self.personas[m.persona_id],
                slots[m.role],
                m.reason,
                room,
                job_id=job_id,
                identity=job_identity if m is self.job_member else "",
            )
            for m in self.members
        ]

    def cast_names(self) -> dict[str, str]:
        """Role -> persona name (the offline model's {dispatcher}, {driver}, ...)."""
        return {m.role: self.personas[m.persona_id].name for m in self.members}

    def lead_role(self) -> str:
        """The role that hears the humans: the `leads` slot's, else the opener's (also when
        the leading slot is optional and was left empty)."""
        roles = {m.role for m in self.members}
        lead = self.scenario.lead_slot.role
        return lead if lead in roles else self.scenario.opener_slot.role

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "campaign": self.scenario.campaign,
            "voicemail": self.voicemail,
            "cast": {m.role: m.persona_id for m in self.members},
        }


def voicemail_scenario(scenario: Scenario, catalog: Catalog) -> Scenario:
    """The scenario as a one-persona voicemail room: the catalog's voicemail persona, pinned,
    opens and leads; the context and rules stay (turns answer whoever addresses it)."""
    persona_id = catalog.voicemail_persona
    if persona_id is None:
        raise PlanError("the catalog has no voicemail_persona")
    slot = CastSlot(role=VOICEMAIL_ROLE, required=True, opens=True, leads=True, persona=persona_id)
    data = scenario.model_dump(mode="json")
    data.update(
        cast=[slot.model_dump(mode="json")],
        rules={**data["rules"], "turn_policy": "addressed"},
        script={k: v for k, v in data["script"].items() if k == VOICEMAIL_ROLE},
        on_no_cast="reject",
        description=f"voicemail: no cast was free for {scenario.name}",
    )
    return Scenario.model_validate(data)


def voicemail_plan(scenario: Scenario, catalog: Catalog, *, reason: str = "voicemail") -> JobPlan:
    """A plan for the voicemail room (the caller leaves a message)."""
    vm = voicemail_scenario(scenario, catalog)
    persona = catalog.persona(vm.cast[0].persona or "")
    return JobPlan(
        scenario=vm,
        job_member=PlanMember(VOICEMAIL_ROLE, persona.id, reason, True),
        voicemail=True,
        personas={persona.id: persona},
    )
