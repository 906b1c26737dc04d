"""Phone calls inside a room's job: each SIP participant (a caller phoning in, or a person the
room dialled) as the room sees it.

livekit-sip joins a call's room as a participant of kind SIP whose attributes say who called
whom (`sip.phoneNumber`, `sip.trunkPhoneNumber`, `sip.callID`, `sip.trunkID`, `sip.ruleID`)
and how the call stands (`sip.callStatus`: ringing, active, hangup). It answers the phone (200
OK) only once it has subscribed to a track in the room, so the room must not speak before the
call is `active`: `answered()` waits for that. Keys the caller presses (RFC 2833) arrive as
`sip_dtmf_received`. Every step is recorded in the transcript: `call`, `call_answered`,
`call_dtmf`, `call_ended` (with the SIP status and the hang-up reason).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livekit import rtc

from config.logging import get_logger

log = get_logger("workers.telephony.call")

STATUS = "sip.callStatus"
ACTIVE = "active"
# transcript field -> the participant attribute livekit-sip sets
CALL_ATTRIBUTES = {
    "phone_number": "sip.phoneNumber",  # the caller (inbound) or the number dialled (outbound)
    "trunk_number": "sip.trunkPhoneNumber",  # the number called (inbound) or calling (outbound)
    "call_id": "sip.callID",
    "trunk_id": "sip.trunkID",
    "rule_id": "sip.ruleID",  # inbound calls only: the dispatch rule that routed it
}
ANSWER_TIMEOUT_S = 30.0  # livekit-sip's own ringing limit for an inbound call is 30 s too

Record = Callable[..., Any]  # record(event, **fields): the room's transcript
OnKey = Callable[[str, str], None]  # (caller identity, key)


def is_phone(participant: rtc.Participant) -> bool:
    return participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP


@dataclass
class Call:
    identity: str
    call_id: str
    status: str
    answered_at: float | None = None
    ended: bool = False


class PhoneCalls:
    """The room's phone calls: recorded as they go, answered() to wait for them."""

    def __init__(self, room: rtc.Room, *, record: Record, on_key: OnKey) -> None:
        self._room = room
        self._record = record
        self._on_key = on_key
        self._calls: dict[str, Call] = {}
        self._changed = asyncio.Event()
        self._closed = False

    def watch(self) -> None:
        room = self._room
        room.on("participant_connected", self._seen)
        room.on("participant_attributes_changed", self._attributes_changed)
        room.on("participant_disconnected", self._gone)
        room.on("sip_dtmf_received", self._key)
        for participant in list(room.remote_participants.values()):
            self._seen(participant)

    def _write(self, event: str, **fields: Any) -> None:
        if self._closed:
            return
        try:
            self._record(event, **fields)
        except Exception as e:  # the transcript never takes the call down
            log.warning("call_record_failed", event_name=event, error=repr(e))

    def _seen(self, participant: rtc.RemoteParticipant) -> None:
        if not is_phone(participant) or participant.identity in self._calls:
            return
        attrs = participant.attributes
        fields = {name: attrs.get(key, "") for name, key in CALL_ATTRIBUTES.items()}
        call = Call(participant.identity, fields["call_id"], attrs.get(STATUS, ""))
        self._calls[call.identity] = call
        direction = "inbound" if fields["rule_id"] else "outbound"
        self._write(
            "call", identity=call.identity, direction=direction, status=call.status, **fields
        )
        log.info("call_joined", identity=call.identity, direction=direction, status=call.status)
        if call.status == ACTIVE:
            self._answered(call)
        self._changed.set()

    def _attributes_changed(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        call = self._calls.get(participant.identity)
        if call is None or STATUS not in changed or changed[STATUS] == call.status:
            return
        call.status = changed[STATUS]
        self._write("call_status", identity=call.identity, call_id=call.call_id, status=call.status)
        if call.status == ACTIVE and call.answered_at is None:
            self._answered(call)
        self._changed.set()

    def _answered(self, call: Call) -> None:
        call.answered_at = round(time.time(), 3)
        self._write("call_answered", identity=call.identity, call_id=call.call_id)
        log.info("call_answered", identity=call.identity)

    def _gone(self, participant: rtc.RemoteParticipant) -> None:
        call = self._calls.get(participant.identity)
        if call is None or call.ended:
            return
        code = participant.disconnect_reason
        reason = rtc.DisconnectReason.Name(code) if code is not None else "UNKNOWN_REASON"
        self._end(call, reason=reason, by="caller")

    def _end(self, call: Call, *, reason: str, by: str) -> None:
        call.ended = True
        duration = round(time.time() - call.answered_at, 3) if call.answered_at else None
        self._write(
            "call_ended",
            identity=call.identity,
            call_id=call.call_id,
            status=call.status,  # the last sip.callStatus: ringing means never answered
            reason=reason,
            ended_by=by,
            answered_at=call.answered_at,
            talk_s=duration,
        )
        log.info("call_ended", identity=call.identity, reason=reason, ended_by=by)
        self._changed.set()

    def _key(self, dtmf: rtc.SipDTMF) -> None:
        identity = dtmf.participant.identity if dtmf.participant is not None else ""
        self._write("call_dtmf", identity=identity, key=dtmf.digit, code=dtmf.code)
        if identity in self._calls and dtmf.digit:
            self._on_key(identity, dtmf.digit)

    def ringing(self) -> list[str]:
        return [c.identity for c in self._calls.values() if not c.ended and c.answered_at is None]

    async def answered(self, within_s: float = ANSWER_TIMEOUT_S) -> bool:
        """Wait until no call in the room is still ringing (answered or gone). True at once
        for a room with no phone in it; False if one still rings after `within_s`."""
        try:
            async with asyncio.timeout(within_s):
                while self.ringing():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            log.warning("call_not_answered", ringing=self.ringing(), timeout_s=within_s)
            return False
        return True

    def close(self) -> None:
        """The room ends: calls still up are hung up by the room (livekit-sip ends a call
        whose room is gone). Nothing is recorded after this."""
        for call in self._calls.values():
            if not call.ended:
                self._end(call, reason="room ended", by="room")
        self._closed = True
        self._changed.set()
