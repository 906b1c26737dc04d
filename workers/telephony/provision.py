"""Make the LiveKit server's SIP trunks and dispatch rules match the catalog, idempotently.

`sync` creates what is missing and replaces what differs (compared field by field on what the
catalog sets), so a second run changes nothing; `prune` deletes what this project made (see
`resources.managed_key`) for catalog entries that are gone, and never touches anything else;
`listing` shows everything the server has. A server's ids are never stored locally: a trunk
or rule is found by its mark."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from livekit import api

from workers.telephony.resources import Wanted, managed_key

INBOUND_FIELDS = ("name", "metadata", "numbers", "allowed_addresses")
OUTBOUND_FIELDS = (
    "name",
    "metadata",
    "address",
    "transport",
    "numbers",
    "auth_username",
    "auth_password",
)
RULE_FIELDS = ("name", "metadata", "trunk_ids", "rule", "room_config")


@dataclass(frozen=True)
class Change:
    action: str  # created, updated, deleted, unchanged
    kind: str  # inbound trunk, dispatch rule, outbound trunk
    name: str
    id: str

    def render(self) -> str:
        return f"{self.action:9} {self.kind:14} {self.name} ({self.id})"


def differs(have: Any, want: Any, fields: Sequence[str]) -> list[str]:
    """The fields the catalog sets whose values on the server are not the catalog's."""
    return [f for f in fields if getattr(have, f) != getattr(want, f)]


@dataclass
class ServerState:
    inbound: list[api.SIPInboundTrunkInfo]
    outbound: list[api.SIPOutboundTrunkInfo]
    rules: list[api.SIPDispatchRuleInfo]

    @classmethod
    async def read(cls, lk: api.LiveKitAPI) -> ServerState:
        inbound = await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())
        outbound = await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())
        rules = await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())
        return cls(list(inbound.items), list(outbound.items), list(rules.items))


def _mine(items: Iterable[Any], key: str) -> Any | None:
    return next((i for i in items if managed_key(i.metadata) == key), None)


async def sync(lk: api.LiveKitAPI, want: Wanted) -> list[Change]:
    state = await ServerState.read(lk)
    changes: list[Change] = []
    for route in want.inbound:
        trunk = _mine(state.inbound, route.key)
        if trunk is None:
            trunk = await lk.sip.create_inbound_trunk(
                api.CreateSIPInboundTrunkRequest(trunk=route.trunk)
            )
            changes.append(Change("created", "inbound trunk", trunk.name, trunk.sip_trunk_id))
        elif differs(trunk, route.trunk, INBOUND_FIELDS):
            replacement = api.SIPInboundTrunkInfo()
            replacement.CopyFrom(route.trunk)
            replacement.sip_trunk_id = trunk.sip_trunk_id
            trunk = await lk.sip.update_inbound_trunk(trunk.sip_trunk_id, replacement)
            changes.append(Change("updated", "inbound trunk", trunk.name, trunk.sip_trunk_id))
        else:
            changes.append(Change("unchanged", "inbound trunk", trunk.name, trunk.sip_trunk_id))
        rule_want = api.SIPDispatchRuleInfo()
        rule_want.CopyFrom(route.rule)
        rule_want.trunk_ids[:] = [trunk.sip_trunk_id]
        changes.append(await _sync_rule(lk, _mine(state.rules, route.key), rule_want))
    for key, out_want in want.outbound.items():
        changes.append(await _sync_outbound(lk, _mine(state.outbound, key), out_want))
    return changes


async def _sync_rule(
    lk: api.LiveKitAPI, rule: api.SIPDispatchRuleInfo | None, want: api.SIPDispatchRuleInfo
) -> Change:
    if rule is None:
        request = api.CreateSIPDispatchRuleRequest(dispatch_rule=want)
        made = await lk.sip.create_dispatch_rule(request)
        return Change("created", "dispatch rule", made.name, made.sip_dispatch_rule_id)
    if differs(rule, want, RULE_FIELDS):
        want.sip_dispatch_rule_id = rule.sip_dispatch_rule_id
        made = await lk.sip.update_dispatch_rule(rule.sip_dispatch_rule_id, want)
        return Change("updated", "dispatch rule", made.name, made.sip_dispatch_rule_id)
    return Change("unchanged", "dispatch rule", rule.name, rule.sip_dispatch_rule_id)


async def _sync_outbound(
    lk: api.LiveKitAPI, trunk: api.SIPOutboundTrunkInfo | None, want: api.SIPOutboundTrunkInfo
) -> Change:
    if trunk is None:
        made = await lk.sip.create_outbound_trunk(api.CreateSIPOutboundTrunkRequest(trunk=want))
        return Change("created", "outbound trunk", made.name, made.sip_trunk_id)
    if differs(trunk, want, OUTBOUND_FIELDS):
        replacement = api.SIPOutboundTrunkInfo()
        replacement.CopyFrom(want)
        replacement.sip_trunk_id = trunk.sip_trunk_id
        made = await lk.sip.update_outbound_trunk(trunk.sip_trunk_id, replacement)
        return Change("updated", "outbound trunk", made.name, made.sip_trunk_id)
    return Change("unchanged", "outbound trunk", trunk.name, trunk.sip_trunk_id)


async def prune(lk: api.LiveKitAPI, want: Wanted) -> list[Change]:
    """Delete this project's trunks and rules whose catalog entry is gone (rules first: a
    rule may name a trunk)."""
    state = await ServerState.read(lk)
    keep = want.keys
    changes: list[Change] = []
    for rule in state.rules:
        key = managed_key(rule.metadata)
        if key is not None and key not in keep:
            await lk.sip.delete_dispatch_rule(
                api.DeleteSIPDispatchRuleRequest(sip_dispatch_rule_id=rule.sip_dispatch_rule_id)
            )
            changes.append(Change("deleted", "dispatch rule", rule.name, rule.sip_dispatch_rule_id))
    trunks: list[tuple[str, Any]] = [("inbound trunk", t) for t in state.inbound]
    trunks += [("outbound trunk", t) for t in state.outbound]
    for kind, trunk in trunks:
        key = managed_key(trunk.metadata)
        if key is not None and key not in keep:
            await lk.sip.delete_trunk(api.DeleteSIPTrunkRequest(sip_trunk_id=trunk.sip_trunk_id))
            changes.append(Change("deleted", kind, trunk.name, trunk.sip_trunk_id))
    return changes


def listing(state: ServerState) -> list[str]:
    """One line per trunk and rule on the server; `*` marks this project's."""

    def mark(metadata: str) -> str:
        return "*" if managed_key(metadata) else " "

    lines = []
    for t in state.inbound:
        lines.append(
            f"{mark(t.metadata)} inbound trunk  {t.sip_trunk_id} {t.name}: {', '.join(t.numbers)}"
        )
    for r in state.rules:
        agents = ", ".join(f"{a.agent_name} {a.metadata}" for a in r.room_config.agents)
        lines.append(
            f"{mark(r.metadata)} dispatch rule  {r.sip_dispatch_rule_id} {r.name}: trunks "
            f"{', '.join(r.trunk_ids) or 'any'} -> {agents or 'no agent'}"
        )
    for o in state.outbound:
        auth = f", auth user {o.auth_username}" if o.auth_username else ""  # never the password
        lines.append(
            f"{mark(o.metadata)} outbound trunk {o.sip_trunk_id} {o.name}: {o.address} as "
            f"{', '.join(o.numbers)}{auth}"
        )
    return lines
