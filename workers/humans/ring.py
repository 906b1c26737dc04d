"""Ringing one human agent's phone into the consult room, on LiveKit's SIP service.

One leg per human: `CreateSIPParticipant(wait_until_answered=True)` into `<room>-consult`
with the identity `staff_<id>`. A human with a `phone` is dialled on the tenant's outbound
trunk (the one `workers.telephony sync` marked); one with a `sip_uri` is dialled directly,
with the trunk given inline in the request (`SIPOutboundConfig`: the URI's host and port),
which livekit-server 1.13.5 and livekit-sip 1.8.0 accept (measured: tests/live/
test_human_agents.py), so no trunk has to be made per person. An inline trunk must present
a caller id (`sip_number`; without one the server answers "no numbers on outbound trunk"):
the tenant's outbound number, else the tenant's id (From: "brightcart" <sip:brightcart@...>).
`hang_up` removes the leg from the consult room: livekit-sip then CANCELs a ringing INVITE
(measured 0.02-0.05 s from the request) or BYEs an answered call."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from livekit import api

from config.humans import SIP_URI, HumanAgent
from config.logging import get_logger
from workers.main.livekit_check import http_url
from workers.telephony.dial import API_MARGIN_S, failure_kind
from workers.telephony.resources import managed_key

log = get_logger("workers.humans.ring")

# how long hang_up keeps trying to find a leg the server has not put in the room yet
HANG_UP_WITHIN_S = 1.0
MAX_CALL_S = 4 * 3600.0


@dataclass(frozen=True)
class LegEnd:
    """How a leg's ringing ended: `answered`, `busy`, `declined`, `timed_out` or `failed`."""

    status: str
    sip_status_code: int | None = None
    reason: str = ""


def leg_end(code: int | None, why: str) -> LegEnd:
    kind = failure_kind(code, why)
    status = {"no_answer": "timed_out"}.get(kind, kind)
    return LegEnd(status, code, why)


class Ringer(Protocol):
    """Rings people into one consult room (the boundary the transfer's tests script)."""

    consult_room: str

    async def ring(self, human: HumanAgent, timeout_s: float) -> LegEnd:
        """Dial `human`; return once they answered or the leg failed (cancellable)."""
        ...

    async def hang_up(self, human: HumanAgent) -> None:
        """End `human`'s leg, ringing or answered (no error when it is already gone)."""
        ...


def sip_uri_parts(uri: str) -> tuple[str, str]:
    """sip:user@host[:port] -> (user, host[:port])."""
    m = SIP_URI.fullmatch(uri)
    if m is None:
        raise ValueError(f"{uri!r} is not a SIP URI")
    return m.group(1), m.group(2) + (m.group(3) or "")


class SipRinger:
    """Legs on LiveKit's SIP service; `trunk_key` is the tenant's outbound trunk (sync's mark),
    needed only for humans with a phone number."""

    def __init__(
        self,
        *,
        url: str,
        api_key: str,
        api_secret: str,
        consult_room: str,
        trunk_key: str | None,
        caller_id: str,
    ) -> None:
        self.consult_room = consult_room
        self._url = http_url(url)
        self._key = api_key
        self._secret = api_secret
        self._trunk_key = trunk_key
        self._trunk_id: str | None = None
        self._caller_id = caller_id  # the From number for directly dialled SIP URIs
        self._ringing: dict[str, asyncio.Task[object]] = {}

    def _api(self, timeout_s: float = 10.0) -> api.LiveKitAPI:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        return api.LiveKitAPI(self._url, self._key, self._secret, timeout=timeout)

    async def _tenant_trunk(self, lk: api.LiveKitAPI) -> str | None:
        if self._trunk_id is None and self._trunk_key is not None:
            trunks = (await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
            found = next((t for t in trunks if managed_key(t.metadata) == self._trunk_key), None)
            self._trunk_id = found.sip_trunk_id if found is not None else None
        return self._trunk_id

    async def _request(
        self, lk: api.LiveKitAPI, human: HumanAgent, timeout_s: float
    ) -> api.CreateSIPParticipantRequest | LegEnd:
        request = api.CreateSIPParticipantRequest(
            room_name=self.consult_room,
            participant_identity=human.identity,
            participant_name=human.name,
            participant_attributes={"role": "human_agent", "human_agent": human.id},
            wait_until_answered=True,
        )
        if human.sip_uri is not None:
            user, host = sip_uri_parts(human.sip_uri)
            request.trunk.CopyFrom(api.SIPOutboundConfig(hostname=host))
            request.sip_call_to = user
            request.sip_number = self._caller_id
        else:
            trunk = await self._tenant_trunk(lk)
            if trunk is None:
                return LegEnd("failed", None, "the tenant has no outbound trunk: run sync")
            request.sip_trunk_id = trunk
            request.sip_call_to = human.phone or ""
        request.ringing_timeout.FromMilliseconds(int(timeout_s * 1000))
        request.max_call_duration.FromMilliseconds(int(MAX_CALL_S * 1000))
        return request

    async def ring(self, human: HumanAgent, timeout_s: float) -> LegEnd:
        async with self._api(timeout_s + API_MARGIN_S) as lk:
            request = await self._request(lk, human, timeout_s)
            if isinstance(request, LegEnd):
                return request
            create = asyncio.ensure_future(lk.sip.create_sip_participant(request))
            self._ringing[human.id] = create
            try:
                await create
            except api.SipCallError as e:
                return leg_end(e.sip_status_code, e.sip_status or e.message)
            except api.TwirpError as e:
                return leg_end(None, f"{e.code}: {e.message}")
            except (aiohttp.ClientError, TimeoutError) as e:
                return LegEnd("failed", None, repr(e))
            finally:
                self._ringing.pop(human.id, None)
                if not create.done():
                    create.cancel()
        return LegEnd("answered")

    async def hang_up(self, human: HumanAgent) -> None:
        """Remove the leg; a leg still being set up (not in the room yet) is retried until
        it is, for at most HANG_UP_WITHIN_S."""
        deadline = time.monotonic() + HANG_UP_WITHIN_S
        async with self._api() as lk:
            while True:
                try:
                    await lk.room.remove_participant(
                        api.RoomParticipantIdentity(room=self.consult_room, identity=human.identity)
                    )
                    return
                except api.TwirpError as e:
                    gone = e.code == api.TwirpErrorCode.NOT_FOUND
                    ringing = self._ringing.get(human.id)
                    if not gone or ringing is None or time.monotonic() > deadline:
                        if not gone:
                            log.warning("leg_hang_up_failed", human=human.id, error=e.message)
                        return
                await asyncio.sleep(0.05)  # the server is still putting the leg in the room
