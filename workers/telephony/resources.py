"""What the catalog's telephony asks the LiveKit server for: inbound trunks and their dispatch
rules, and outbound trunks, each marked as this project's (`managed_key`) so that `prune`
removes only what it made.

Built with everything checked first: each inbound line's scenario must exist in SCENARIOS_DIR
and fit the catalog, and each outbound trunk's password variable must be set. A problem raises
CatalogError naming the catalog file, the JSON path and the fix; a password never appears in
any message."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from livekit import api

from config.catalog import Catalog
from config.errors import CatalogError, ConfigError, Problem
from config.scenario import check_scenario, load_scenario
from config.telephony import InboundLine, OutboundTrunk

MANAGED_BY = "multi-persona-worker"
TRANSPORTS = {
    "auto": api.SIPTransport.SIP_TRANSPORT_AUTO,
    "udp": api.SIPTransport.SIP_TRANSPORT_UDP,
    "tcp": api.SIPTransport.SIP_TRANSPORT_TCP,
    "tls": api.SIPTransport.SIP_TRANSPORT_TLS,
}


def marker(key: str) -> str:
    """The metadata that marks a trunk or rule as made by this project for catalog `key`."""
    return json.dumps({"managed_by": MANAGED_BY, "key": key}, sort_keys=True)


def managed_key(metadata: str) -> str | None:
    """The catalog key a trunk or rule was made for, or None if this project did not make it."""
    try:
        data = json.loads(metadata or "{}")
    except ValueError:
        return None
    if isinstance(data, dict) and data.get("managed_by") == MANAGED_BY:
        key = data.get("key")
        return key if isinstance(key, str) else None
    return None


def inbound_key(line: InboundLine) -> str:
    return f"inbound:{line.id}"


def outbound_key(trunk: OutboundTrunk) -> str:
    return f"outbound:{trunk.id}"


def room_prefix(line: InboundLine) -> str:
    """Each call gets a room of its own: `call-<line>_<caller>_<random>`."""
    return f"call-{line.id}"


def agent_metadata(line: InboundLine) -> str:
    """What the worker's job receives: the scenario by name, as an inbound call."""
    data: dict[str, object] = {"scenario": line.scenario, "inbound": True}
    if line.campaign is not None:
        data["campaign"] = line.campaign
    return json.dumps(data, sort_keys=True)


@dataclass(frozen=True)
class InboundRoute:
    """One inbound line: its trunk, and the rule that dispatches its calls (the rule's
    trunk_ids are filled in once the trunk's id is known)."""

    key: str
    trunk: api.SIPInboundTrunkInfo
    rule: api.SIPDispatchRuleInfo


@dataclass(frozen=True)
class Wanted:
    inbound: tuple[InboundRoute, ...]
    outbound: Mapping[str, api.SIPOutboundTrunkInfo]  # key -> trunk

    @property
    def keys(self) -> set[str]:
        return {r.key for r in self.inbound} | set(self.outbound)


def _inbound(line: InboundLine, agent_name: str) -> InboundRoute:
    key = inbound_key(line)
    trunk = api.SIPInboundTrunkInfo(
        name=line.id,
        metadata=marker(key),
        numbers=list(line.numbers),
        allowed_addresses=list(line.allowed_addresses),
    )
    rule = api.SIPDispatchRuleInfo(
        name=line.id,
        metadata=marker(key),
        rule=api.SIPDispatchRule(
            dispatch_rule_individual=api.SIPDispatchRuleIndividual(room_prefix=room_prefix(line))
        ),
        room_config=api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name=agent_name, metadata=agent_metadata(line))]
        ),
    )
    return InboundRoute(key, trunk, rule)


def _outbound(trunk: OutboundTrunk, password: str) -> api.SIPOutboundTrunkInfo:
    return api.SIPOutboundTrunkInfo(
        name=trunk.id,
        metadata=marker(outbound_key(trunk)),
        address=trunk.address,
        transport=TRANSPORTS[trunk.transport],
        numbers=list(trunk.numbers),
        auth_username=trunk.auth_username or "",
        auth_password=password,
    )


def wanted(
    catalog: Catalog,
    *,
    source: str,
    scenarios_dir: Path,
    agent_name: str,
    environ: Mapping[str, str],
) -> Wanted:
    """Everything the catalog asks for; raises CatalogError (naming `source`) on any problem."""
    problems: list[Problem] = []
    routes = []
    for i, line in enumerate(catalog.telephony.inbound):
        problem = _scenario_problem(catalog, line, f"$.telephony.inbound[{i}]", scenarios_dir)
        if problem is not None:
            problems.append(problem)
            continue
        routes.append(_inbound(line, agent_name))
    outbound = {}
    for i, trunk in enumerate(catalog.telephony.outbound):
        password = ""
        if trunk.auth_password_env is not None:
            password = environ.get(trunk.auth_password_env, "")
            if not password:
                problems.append(
                    Problem(
                        f"$.telephony.outbound[{i}].auth_password_env",
                        f"the environment variable {trunk.auth_password_env} is not set",
                        "export it with the trunk's password before running sync",
                    )
                )
                continue
        outbound[outbound_key(trunk)] = _outbound(trunk, password)
    if problems:
        raise CatalogError(source, problems)
    return Wanted(tuple(routes), outbound)


def _scenario_problem(
    catalog: Catalog, line: InboundLine, at: str, scenarios_dir: Path
) -> Problem | None:
    """The line's scenario must be one the worker can load by name and cast in its campaign."""
    try:
        scenario = load_scenario(line.scenario, scenarios_dir=scenarios_dir)
        if line.campaign is not None:
            scenario = scenario.model_copy(update={"campaign": line.campaign})
        check_scenario(scenario, catalog, line.scenario)
    except ConfigError as e:
        first = e.problems[0]
        return Problem(f"{at}.scenario", f"scenario {line.scenario!r}: {first.render()}")
    return None
