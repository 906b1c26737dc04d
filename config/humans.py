"""The catalog's human agents: the people a persona can hand a caller to, reached by phone
through the tenant's SIP trunk (or their own SIP address), and which contacts are assigned to
whom.

A human agent's room identity is `staff_<id>`: the seed systems' `agent_{userId}` is taken in
this project by the personas (`agent_<persona>_<room>`, which clients, tests and the browser
page read as "a persona"), so people get a prefix of their own that no caller token may take
(workers.tokens.RESERVED_IDENTITY_PREFIXES).

`availability` here is where a human starts; an operator changes it at run time
(`python -m workers.humans set ID available|busy|offline`)."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from config.errors import Problem
from config.strict import StrictModel

HUMAN_IDENTITY_PREFIX = "staff_"
Availability = Literal["available", "busy", "offline"]
AVAILABILITY: tuple[str, ...] = ("available", "busy", "offline")

E164_PATTERN = re.compile(r"\+[1-9][0-9]{6,14}")
# sip:user@host[:port]: a desk phone or softphone registered nowhere but reachable directly
SIP_URI = re.compile(r"sip:([A-Za-z0-9_.+-]{1,64})@([A-Za-z0-9][A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?")

Id = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
Skill = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


def _e164(value: str) -> str:
    if not E164_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not an E.164 number (write it as +15550100000)")
    return value


def _sip_uri(value: str) -> str:
    if not SIP_URI.fullmatch(value):
        raise ValueError(f"{value!r} is not a SIP URI (write it as sip:alice@10.0.0.5:5060)")
    return value


class HumanAgent(StrictModel):
    """A person who takes calls. Exactly one of `phone` (dialled on the tenant's outbound
    trunk) or `sip_uri` (dialled directly)."""

    id: Id
    tenant: str
    name: str = Field(min_length=1, max_length=64)
    phone: Annotated[str, AfterValidator(_e164)] | None = None
    sip_uri: Annotated[str, AfterValidator(_sip_uri)] | None = None
    # the roles or queues they take (a persona's role, e.g. support, or a queue name)
    skills: tuple[Skill, ...] = ()
    capacity: int = Field(default=1, ge=1, le=20, description="concurrent calls")
    availability: Availability = "available"

    @model_validator(mode="after")
    def _one_address(self) -> HumanAgent:
        if (self.phone is None) == (self.sip_uri is None):
            raise ValueError("a human agent needs exactly one of `phone` or `sip_uri`")
        return self

    @property
    def identity(self) -> str:
        return human_identity(self.id)

    @property
    def address(self) -> str:
        return self.phone or self.sip_uri or ""


def human_identity(human_id: str) -> str:
    return f"{HUMAN_IDENTITY_PREFIX}{human_id}"


class ContactAssignment(StrictModel):
    """A contact's assigned human agents (the seed's assignment-based routing): a transfer
    for this contact rings them first."""

    contact: str = Field(min_length=1, max_length=128)
    tenant: str
    agents: tuple[str, ...] = Field(min_length=1)


def check_humans(
    humans: tuple[HumanAgent, ...],
    contacts: tuple[ContactAssignment, ...],
    *,
    tenants_known: Collection[str],
) -> list[Problem]:
    """Ids unique, tenants known, assignments name agents of their own tenant."""
    problems: list[Problem] = []
    by_id: dict[str, HumanAgent] = {}
    for i, human in enumerate(humans):
        at = f"$.human_agents[{i}]"
        if human.id in by_id:
            problems.append(Problem(f"{at}.id", f"duplicate id {human.id!r}", "ids are unique"))
        by_id.setdefault(human.id, human)
        if human.tenant not in tenants_known:
            problems.append(
                Problem(
                    f"{at}.tenant",
                    f"unknown tenant {human.tenant!r}",
                    f"known: {', '.join(sorted(tenants_known))}",
                )
            )
    seen: set[tuple[str, str]] = set()
    for i, assignment in enumerate(contacts):
        at = f"$.contact_assignments[{i}]"
        key = (assignment.tenant, assignment.contact)
        if key in seen:
            problems.append(
                Problem(f"{at}.contact", f"contact {assignment.contact!r} assigned twice", "merge")
            )
        seen.add(key)
        if assignment.tenant not in tenants_known:
            problems.append(
                Problem(
                    f"{at}.tenant",
                    f"unknown tenant {assignment.tenant!r}",
                    f"known: {', '.join(sorted(tenants_known))}",
                )
            )
        for j, agent in enumerate(assignment.agents):
            found = by_id.get(agent)
            if found is None:
                problems.append(
                    Problem(
                        f"{at}.agents[{j}]",
                        f"unknown human agent {agent!r}",
                        f"known: {', '.join(sorted(by_id)) or 'none (add human_agents)'}",
                    )
                )
            elif found.tenant != assignment.tenant:
                problems.append(
                    Problem(
                        f"{at}.agents[{j}]",
                        f"{agent!r} works for tenant {found.tenant!r}",
                        f"assign agents of tenant {assignment.tenant!r}",
                    )
                )
    return problems
