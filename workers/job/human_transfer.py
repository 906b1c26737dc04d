"""A job's way to people (`transfer_to_human`): the desk client that asks the worker's main
process who is free and holds the winner's seat under this job, a ringer on LiveKit's SIP
service into the consult room `<room>-consult`, and the bridge that briefs the winner there
and puts them on the line in the caller's room. None when no persona of the room may transfer
(the tenant's tools) or the job has no server credentials."""

from __future__ import annotations

import functools
from collections.abc import Callable

from config import roles
from config.catalog import Catalog
from workers.humans.bridge import warm_hand_over
from workers.humans.client import JobDesk, desk_for_job
from workers.humans.ring import SipRinger
from workers.humans.room_transfer import RoomTransfer, transfer_for_room
from workers.job.plan import JobPlan
from workers.room.stage.livekit import LiveKitStage
from workers.room.transcript import Transcript
from workers.telephony.resources import outbound_key


def consult_room(room: str) -> str:
    return f"{room}-consult"


def can_transfer(catalog: Catalog, plan: JobPlan) -> bool:
    campaign = plan.scenario.campaign
    return any(
        roles.TRANSFER_TOOL in catalog.allowed_tools(p, campaign) for p in plan.personas.values()
    )


def job_transfer(
    *,
    job_id: str,
    room: str,
    catalog: Catalog,
    plan: JobPlan,
    stage: LiveKitStage,
    url: str,
    api_key: str,
    api_secret: str,
) -> tuple[Callable[[Transcript], RoomTransfer], JobDesk] | None:
    """The room's transfer (what run_room builds it from) and the desk it asks, which the job
    closes when the room has ended."""
    if not api_key or not can_transfer(catalog, plan):
        return None
    tenant = catalog.tenant_of(plan.scenario.campaign).id
    trunk = next((t for t in catalog.telephony.outbound if t.tenant == tenant), None)
    consult = consult_room(room)
    ringer = SipRinger(
        url=url,
        api_key=api_key,
        api_secret=api_secret,
        consult_room=consult,
        trunk_key=outbound_key(trunk) if trunk is not None else None,
        caller_id=trunk.numbers[0] if trunk is not None else tenant,
    )
    bridge = functools.partial(
        warm_hand_over,
        url=url,
        api_key=api_key,
        api_secret=api_secret,
        caller_room=room,
        consult_room=consult,
    )
    desk = desk_for_job(job_id, catalog)
    build = transfer_for_room(
        room=room,
        scenario=plan.scenario,
        catalog=catalog,
        desk=desk,
        ringer=ringer,
        bridge=bridge,
        leave=stage.personas_leave,
    )
    return build, desk
