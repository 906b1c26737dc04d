"""The room phones someone (a scenario's `dial`): CreateSIPParticipant on the campaign
tenant's outbound trunk, waiting until the call is answered.

Answered: the callee joins the room as a SIP participant and the opener speaks first. Busy
(486), declined (603), not answered within the ringing timeout (408/480), or no trunk: the
transcript records `call_failed` with the SIP status, and `NotAnswered` ends the room as
`no_answer` (its leases released as on every path)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from livekit import api

from config.catalog import Catalog
from config.logging import get_logger
from config.scenario import Dial, Scenario
from workers.main.livekit_check import http_url
from workers.room.stage.base import NotAnswered
from workers.telephony.resources import managed_key, outbound_key

log = get_logger("workers.telephony.dial")
API_MARGIN_S = 10.0  # the request outlasts the ringing window by this much
BUSY = frozenset({486, 600})
DECLINED = frozenset({603})
NO_ANSWER = frozenset({408, 480, 487})


def failure_kind(code: int | None, why: str) -> str:
    """busy, declined, no_answer (no answer within the ringing timeout: livekit-sip cancels
    the INVITE and reports "sip request timed out" with no status) or failed."""
    if code in BUSY:
        return "busy"
    if code in DECLINED:
        return "declined"
    if code in NO_ANSWER or (code is None and "timed out" in why):
        return "no_answer"
    return "failed"


@dataclass(frozen=True)
class Dialer:
    number: str
    dial: Dial
    trunk_key: str | None  # the tenant's outbound trunk, as sync marked it
    url: str
    api_key: str
    api_secret: str

    @property
    def identity(self) -> str:
        return f"phone_{self.number.lstrip('+')}"

    async def place(self, room: str, record: Any) -> None:
        """Dial and wait for the answer; raises NotAnswered (recorded) when there is none."""
        if self.trunk_key is None:
            return self._failed(record, None, "the campaign's tenant has no outbound trunk")
        timeout = aiohttp.ClientTimeout(total=self.dial.ringing_timeout_s + API_MARGIN_S)
        async with api.LiveKitAPI(
            http_url(self.url), self.api_key, self.api_secret, timeout=timeout
        ) as lk:
            trunks = (await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
            trunk = next((t for t in trunks if managed_key(t.metadata) == self.trunk_key), None)
            if trunk is None:
                return self._failed(
                    record, None, "no outbound trunk on the server: run workers.telephony sync"
                )
            record(
                "call_dialing",
                number=self.number,
                identity=self.identity,
                trunk_id=trunk.sip_trunk_id,
                ringing_timeout_s=self.dial.ringing_timeout_s,
            )
            request = api.CreateSIPParticipantRequest(
                sip_trunk_id=trunk.sip_trunk_id,
                sip_call_to=self.number,
                room_name=room,
                participant_identity=self.identity,
                participant_name=self.number,
                wait_until_answered=True,
            )
            request.ringing_timeout.FromMilliseconds(int(self.dial.ringing_timeout_s * 1000))
            request.max_call_duration.FromMilliseconds(int(self.dial.max_call_s * 1000))
            try:
                await lk.sip.create_sip_participant(request)
            except api.SipCallError as e:
                return self._failed(record, e.sip_status_code, e.sip_status or e.message)
            except api.ServerError as e:
                return self._failed(record, None, f"{e.code}: {e.message}")
        log.info("call_placed", number=self.number)

    def _failed(self, record: Any, code: int | None, why: str) -> None:
        kind = failure_kind(code, why)
        record("call_failed", number=self.number, outcome=kind, sip_status_code=code, reason=why)
        log.info("call_not_answered", number=self.number, sip_status_code=code, reason=why)
        raise NotAnswered(f"call to {self.number}: {kind} ({code or 'no SIP status'}: {why})")


def dialer_for(
    catalog: Catalog, scenario: Scenario, *, url: str, api_key: str, api_secret: str
) -> Dialer | None:
    """The scenario's call, if it places one and names a number."""
    dial = scenario.dial
    if dial is None or dial.number is None:
        return None
    tenant = catalog.tenant_of(scenario.campaign).id
    trunk = next((t for t in catalog.telephony.outbound if t.tenant == tenant), None)
    return Dialer(
        number=dial.number,
        dial=dial,
        trunk_key=outbound_key(trunk) if trunk is not None else None,
        url=url,
        api_key=api_key,
        api_secret=api_secret,
    )
