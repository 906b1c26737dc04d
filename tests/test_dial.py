"""Outbound calls before the network: `workers.dispatch --call` sends the scenario with its
`dial` number, the job finds its tenant's trunk, and a call that is not answered ends the room
as `no_answer` with the reason in the transcript."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents.models import SessionModels
from config.scenario import Dial, load_scenario
from tests.fakes import FakeLLM, say
from tests.test_dispatch_cli import (  # noqa: F401 (fixtures)
    CREATE_DISPATCH,
    FakeLiveKit,
    RunDispatch,
    livekit,
    run_dispatch,
)
from workers.job.plan import parse_job_metadata
from workers.room.runner import run_room
from workers.room.seat import seats_for
from workers.room.stage.base import NotAnswered
from workers.room.stage.local import LocalStage
from workers.room.transcript import read_transcript
from workers.selector import Selector
from workers.telephony.dial import dialer_for, failure_kind

KEYS = {"url": "ws://127.0.0.1:9", "api_key": "k", "api_secret": "s"}


async def test_dispatch_call_sends_the_number_with_the_scenario(
    livekit: FakeLiveKit,  # noqa: F811
    run_dispatch: RunDispatch,  # noqa: F811
    catalog,
    scenarios_dir,
):
    code, out, err = await run_dispatch(
        "driver_phone_checkin", "--call", "+15550100777", "--json", url=livekit.url
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["calling"] == "+15550100777" and "token" not in result
    from livekit import api

    sent = livekit.request(CREATE_DISPATCH, api.CreateAgentDispatchRequest).metadata
    request = parse_job_metadata(sent, catalog=catalog, scenarios_dir=scenarios_dir)
    assert request.scenario.dial == Dial(number="+15550100777", ringing_timeout_s=25)


async def test_a_bad_number_exits_2_before_any_api_call(
    livekit: FakeLiveKit,  # noqa: F811
    run_dispatch: RunDispatch,  # noqa: F811
):
    code, _, err = await run_dispatch("driver_phone_checkin", "--call", "555-0100", url=livekit.url)
    assert code == 2 and "not an E.164 number" in err and len(err.strip().splitlines()) == 1
    assert livekit.calls == []


def test_the_dialer_uses_the_tenants_outbound_trunk(catalog, scenarios_dir):
    scenario = load_scenario("driver_phone_checkin", scenarios_dir=scenarios_dir)
    assert dialer_for(catalog, scenario, **KEYS) is None  # no number: nobody to call
    calling = scenario.model_copy(update={"dial": Dial(number="+15550100777")})
    dialer = dialer_for(catalog, calling, **KEYS)
    assert dialer is not None and dialer.trunk_key == "outbound:acme-dispatch-out"
    assert dialer.identity == "phone_15550100777"
    other = calling.model_copy(update={"campaign": "inbound-support"})  # brightcart: no trunk
    dialer = dialer_for(catalog, other, **KEYS)
    assert dialer is not None and dialer.trunk_key is None
    recorded: list[tuple[str, dict]] = []
    with pytest.raises(NotAnswered, match="no outbound trunk"):
        asyncio.run(dialer.place("r", lambda event, **f: recorded.append((event, f))))
    assert recorded == [
        (
            "call_failed",
            {
                "number": "+15550100777",
                "outcome": "failed",
                "sip_status_code": None,
                "reason": "the campaign's tenant has no outbound trunk",
            },
        )
    ]


class UnansweredStage(LocalStage):
    async def _open(self, cast, events):
        sessions = await super()._open(cast, events)
        events.record("call_failed", number="+15550100777", sip_status_code=486, reason="Busy")
        await self.close()
        raise NotAnswered("call to +15550100777: 486 Busy Here")
        return sessions


async def test_a_call_not_answered_ends_the_room_as_no_answer(catalog, tmp_path, scenarios_dir):
    scenario = load_scenario("driver_phone_checkin", scenarios_dir=scenarios_dir)
    cast = Selector(catalog).cast(scenario)
    try:
        async with asyncio.timeout(20):
            result = await run_room(
                room="dial-1",
                scenario=scenario,
                catalog=catalog,
                seats=seats_for(cast.members, "dial-1"),
                stage=UnansweredStage(),
                models_for=lambda p: SessionModels(llm=FakeLLM([say("never said")])),
                transcripts_dir=tmp_path,
            )
    finally:
        cast.release()
    assert result.reason == "no_answer" and "486" in result.detail
    events = read_transcript(result.transcript_path)
    assert [e["event"] for e in events if e["event"].startswith("call")] == ["call_failed"]
    assert not [e for e in events if e["event"] == "utterance"]


@pytest.mark.parametrize(
    ("code", "why", "kind"),
    [
        (486, "Busy Here", "busy"),
        (603, "Decline", "declined"),
        (480, "Temporarily Unavailable", "no_answer"),
        (None, "canceled: twirp error unknown: sip request timed out", "no_answer"),
        (None, "unavailable: cpu exhausted", "failed"),
    ],
)
def test_why_a_call_failed(code, why, kind):
    assert failure_kind(code, why) == kind
