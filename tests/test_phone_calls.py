"""A phone call as the room sees it (workers/telephony/call.py): recorded step by step, the
room waits for the answer, key presses reach the floor. The room here is livekit's own event
emitter with participants shaped as livekit-sip's (kind SIP, its `sip.*` attributes)."""

from __future__ import annotations

import asyncio
import typing
from dataclasses import dataclass, field
from typing import Any

import pytest
from livekit import rtc

from workers.telephony.call import PhoneCalls

SIP = rtc.ParticipantKind.PARTICIPANT_KIND_SIP


@dataclass
class Participant:
    identity: str
    kind: int = SIP
    attributes: dict[str, str] = field(default_factory=dict)
    disconnect_reason: int | None = None


class Room(rtc.EventEmitter[str]):
    def __init__(self, *present: Participant) -> None:
        super().__init__()
        self.remote_participants = {p.identity: p for p in present}


def caller(status: str = "ringing") -> Participant:
    return Participant(
        "sip_+15550001111",
        attributes={
            "sip.callStatus": status,
            "sip.phoneNumber": "+15550001111",
            "sip.trunkPhoneNumber": "+15550100000",
            "sip.callID": "SCL_abc",
            "sip.trunkID": "ST_1",
            "sip.ruleID": "SDR_1",
        },
    )


def watched(room: Room) -> tuple[PhoneCalls, list[tuple[str, dict[str, Any]]], list]:
    events: list[tuple[str, dict[str, Any]]] = []
    keys: list[tuple[str, str]] = []
    calls = PhoneCalls(
        room,  # type: ignore[arg-type]
        record=lambda event, **fields: events.append((event, fields)),
        on_key=lambda identity, key: keys.append((identity, key)),
    )
    calls.watch()
    return calls, events, keys


async def test_the_room_waits_for_a_ringing_call_to_be_answered():
    phone = caller()
    room = Room(phone)
    calls, events, _ = watched(room)
    waiting = asyncio.ensure_future(calls.answered(within_s=5))
    await asyncio.sleep(0)  # the waiter is parked
    assert not waiting.done()
    room.emit("participant_attributes_changed", {"sip.callStatus": "active"}, phone)
    assert await asyncio.wait_for(waiting, 5) is True
    call = events[0]
    assert call[0] == "call"
    assert call[1] == {
        "identity": "sip_+15550001111",
        "direction": "inbound",
        "status": "ringing",
        "phone_number": "+15550001111",
        "trunk_number": "+15550100000",
        "call_id": "SCL_abc",
        "trunk_id": "ST_1",
        "rule_id": "SDR_1",
    }
    assert [e for e, _ in events[1:]] == ["call_status", "call_answered"]


async def test_no_phone_no_wait_and_a_call_never_answered_is_reported():
    calls, events, _ = watched(Room(Participant("caller-web", kind=0)))
    assert await calls.answered(within_s=0.01) is True
    assert events == []
    calls, events, _ = watched(Room(caller()))
    assert await calls.answered(within_s=0.05) is False


async def test_keys_reach_the_floor_and_hang_up_is_recorded_with_its_reason():
    phone = caller("active")
    room = Room(phone)
    calls, events, keys = watched(room)
    room.emit(
        "sip_dtmf_received",
        rtc.SipDTMF(code=1, digit="1", participant=typing.cast(rtc.RemoteParticipant, phone)),
    )
    assert keys == [("sip_+15550001111", "1")]
    phone.disconnect_reason = rtc.DisconnectReason.CLIENT_INITIATED
    room.emit("participant_disconnected", phone)
    calls.close()  # nothing more after the room closed
    room.emit(
        "sip_dtmf_received",
        rtc.SipDTMF(code=2, digit="2", participant=typing.cast(rtc.RemoteParticipant, phone)),
    )
    names = [e for e, _ in events]
    assert names == ["call", "call_answered", "call_dtmf", "call_ended"]
    ended = events[-1][1]
    assert ended["reason"] == "CLIENT_INITIATED" and ended["ended_by"] == "caller"
    assert ended["status"] == "active" and ended["talk_s"] is not None


async def test_a_call_still_up_when_the_room_ends_is_hung_up_by_the_room():
    calls, events, _ = watched(Room(caller("active")))
    calls.close()
    assert events[-1][0] == "call_ended" and events[-1][1]["ended_by"] == "room"


@pytest.mark.parametrize("status", ["ringing", "active"])
async def test_a_transcript_that_fails_never_takes_the_call_down(status):
    def broken(event: str, **fields: Any) -> None:
        raise RuntimeError("transcript closed")

    room = typing.cast(rtc.Room, Room(caller(status)))  # a stand-in for the job's room
    calls = PhoneCalls(room, record=broken, on_key=lambda i, k: None)
    calls.watch()
    assert calls.ringing() == ([] if status == "active" else ["sip_+15550001111"])
