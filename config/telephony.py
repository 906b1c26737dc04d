"""The catalog's telephony: which phone numbers reach which scenario, and which SIP trunk each
tenant calls out on. `python -m workers.telephony sync` makes LiveKit's trunks and dispatch
rules match it.

Passwords are never in the catalog: an outbound trunk with digest auth names the environment
variable that holds its password (`auth_password_env`)."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from config.errors import Problem
from config.strict import StrictModel

E164_PATTERN = re.compile(r"\+[1-9][0-9]{6,14}")
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
# host or IPv4, optional :port; SIP providers are named by address, never by URL
ADDRESS = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})(:[0-9]{1,5})?")
# an IPv4 address or CIDR a provider's INVITEs come from
CIDR = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?")


def _e164(value: str) -> str:
    if not E164_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not an E.164 number (write it as +15550100000)")
    return value


def _env_name(value: str) -> str:
    if not ENV_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an environment variable name (the NAME of the variable that "
            "holds the password, e.g. ACME_SIP_PASSWORD; never the password)"
        )
    return value


def _address(value: str) -> str:
    if not ADDRESS.fullmatch(value):
        raise ValueError(f"{value!r} is not a host[:port] (e.g. sip.example.com:5060)")
    return value


def _cidr(value: str) -> str:
    if not CIDR.fullmatch(value):
        raise ValueError(f"{value!r} is not an IPv4 address or CIDR (e.g. 203.0.113.0/24)")
    return value


E164 = Annotated[str, AfterValidator(_e164)]
Id = Annotated[str, Field(min_length=1, max_length=48, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
ScenarioName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]


class InboundLine(StrictModel):
    """Calls to `numbers` become rooms of `scenario` (its campaign, or `campaign`), one room
    per call, dispatched to this worker as inbound."""

    id: Id
    numbers: tuple[E164, ...]  # at least one (check_telephony: pydantic would say it twice)
    scenario: ScenarioName
    campaign: str | None = None
    # where the SIP provider's INVITEs come from; empty: any address
    allowed_addresses: tuple[Annotated[str, AfterValidator(_cidr)], ...] = ()


class OutboundTrunk(StrictModel):
    """The SIP trunk a tenant's personas call out on."""

    id: Id
    tenant: str
    address: Annotated[str, AfterValidator(_address)]
    transport: Literal["auto", "udp", "tcp", "tls"] = "auto"
    numbers: tuple[E164, ...]  # at least one: the caller id it presents
    auth_username: str | None = Field(default=None, min_length=1, max_length=128)
    auth_password_env: Annotated[str, AfterValidator(_env_name)] | None = None

    @model_validator(mode="after")
    def _auth_pair(self) -> OutboundTrunk:
        if (self.auth_username is None) != (self.auth_password_env is None):
            raise ValueError(
                "digest auth needs both auth_username and auth_password_env (or neither)"
            )
        return self


class Telephony(StrictModel):
    inbound: tuple[InboundLine, ...] = ()
    outbound: tuple[OutboundTrunk, ...] = ()


def _check_entry(
    entry_id: str, numbers: tuple[str, ...], at: str, ids: dict[str, str], problems: list[Problem]
) -> None:
    """An id unique across the telephony section (it names the server's trunk), some numbers
    (pydantic's min_length would report a bad number twice)."""
    if entry_id in ids:
        problems.append(Problem(f"{at}.id", f"duplicate id {entry_id!r}", f"also {ids[entry_id]}"))
    ids.setdefault(entry_id, at)
    if not numbers:
        problems.append(
            Problem(f"{at}.numbers", "no numbers", "list at least one, e.g. +15550100000")
        )


def check_telephony(
    tel: Telephony, *, campaigns: Collection[str], tenants_known: Collection[str]
) -> list[Problem]:
    """Ids and numbers unique, campaigns and tenants known (the catalog's, passed in: this
    module stays below the catalog), one outbound trunk per tenant."""
    problems: list[Problem] = []
    ids: dict[str, str] = {}
    numbers: dict[str, str] = {}
    for i, line in enumerate(tel.inbound):
        at = f"$.telephony.inbound[{i}]"
        _check_entry(line.id, line.numbers, at, ids, problems)
        for j, number in enumerate(line.numbers):
            if number in numbers:
                problems.append(
                    Problem(
                        f"{at}.numbers[{j}]",
                        f"{number} already reaches {numbers[number]}",
                        "a number reaches one inbound line",
                    )
                )
            numbers.setdefault(number, at)
        if line.campaign is not None and line.campaign not in campaigns:
            problems.append(
                Problem(
                    f"{at}.campaign",
                    f"unknown campaign {line.campaign!r}",
                    f"known: {', '.join(sorted(campaigns))}",
                )
            )
    tenants: dict[str, str] = {}
    for i, trunk in enumerate(tel.outbound):
        at = f"$.telephony.outbound[{i}]"
        _check_entry(trunk.id, trunk.numbers, at, ids, problems)
        if trunk.tenant not in tenants_known:
            problems.append(
                Problem(
                    f"{at}.tenant",
                    f"unknown tenant {trunk.tenant!r}",
                    f"known: {', '.join(sorted(tenants_known))}",
                )
            )
        elif trunk.tenant in tenants:
            problems.append(
                Problem(
                    f"{at}.tenant",
                    f"tenant {trunk.tenant!r} already calls out on {tenants[trunk.tenant]}",
                    "keep one outbound trunk per tenant",
                )
            )
        tenants.setdefault(trunk.tenant, at)
    return problems
