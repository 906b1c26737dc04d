"""A scenario's phone menu (`dtmf`): a key the caller presses reaches the floor as a human line
with its key, and the floor applies the menu: a role's key hands the caller over through the
usual hand-over, `end` ends the call. Real AgentSessions on the local stage, fake LLMs."""

from __future__ import annotations

import asyncio

import pytest

from agents.models import SessionModels
from config.errors import ScenarioError
from config.scenario import load_scenario, parse_scenario
from tests.fakes import FakeCall, FakeLLM, Step, say
from workers.room.runner import run_room
from workers.room.seat import seats_for
from workers.room.stage.livekit import LiveHumans
from workers.room.stage.local import LocalStage
from workers.room.transcript import read_transcript
from workers.selector import Selector


async def _phone_room(catalog, tmp_path, scenarios_dir, key: str):
    scenario = load_scenario("phone_support", scenarios_dir=scenarios_dir)
    humans = LiveHumans()
    humans.joined("sip_+15550001111")
    said: list[str] = []

    def support(c: FakeCall) -> Step:
        said.append("support")
        if len(said) == 1:
            humans.pressed("sip_+15550001111", key)  # pressed while the greeting plays
        else:
            humans.gone("sip_+15550001111")
        return say("BrightCart support. Press 1 for sales.")

    def sales(c: FakeCall) -> Step:
        said.append("sales")
        humans.gone("sip_+15550001111")  # the caller hangs up after sales greets them
        return say("Hi, sales here.")

    fakes = {"support": support, "sales": sales}
    cast = Selector(catalog).cast(scenario)
    try:
        async with asyncio.timeout(20):
            result = await run_room(
                room="call-1",
                scenario=scenario,
                catalog=catalog,
                seats=seats_for(cast.members, "call-1"),
                stage=LocalStage(humans=humans),
                models_for=lambda p: SessionModels(llm=FakeLLM(fakes[p.role])),
                transcripts_dir=tmp_path,
            )
    finally:
        cast.release()
    return result, read_transcript(result.transcript_path), said


async def test_a_menu_key_hands_the_caller_to_that_role(catalog, tmp_path, scenarios_dir):
    result, events, said = await _phone_room(catalog, tmp_path, scenarios_dir, "1")
    assert said == ["support", "sales"]
    human = next(e for e in events if e["event"] == "human")
    assert human["key"] == "1" and "pressed 1" in human["text"]
    hand = [e for e in events if e["event"] == "hand_over"]
    assert len(hand) == 1 and "pressed 1 (sales)" in hand[0]["summary"]
    assert result.reason == "humans_left"


async def test_the_end_key_ends_the_call(catalog, tmp_path, scenarios_dir):
    result, _, said = await _phone_room(catalog, tmp_path, scenarios_dir, "9")
    assert said == ["support"]
    assert result.reason == "end_conversation" and "pressed 9" in result.detail


async def test_a_key_off_the_menu_is_answered_by_the_holder(catalog, tmp_path, scenarios_dir):
    _, events, said = await _phone_room(catalog, tmp_path, scenarios_dir, "5")
    assert said == ["support", "support"]
    assert not [e for e in events if e["event"] == "hand_over"]


@pytest.mark.parametrize(
    ("dtmf", "message"),
    [
        ({"x": {"role": "sales"}}, "not a keypad key"),
        ({"1": {"role": "driver"}}, "not in the cast"),
        ({"1": {"role": "sales", "action": "end"}}, "exactly one of"),
        ({"1": {}}, "exactly one of"),
    ],
)
def test_a_bad_menu_is_refused_with_its_path(dtmf, message):
    text = (
        '{"name": "m", "campaign": "inbound-support", "cast": [{"role": "support"}, '
        '{"role": "sales", "required": false}], "rules": {"turn_policy": "addressed"}, '
        f'"dtmf": {__import__("json").dumps(dtmf)}}}'
    )
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "menu.json")
    assert message in str(info.value) and "menu.json: $" in str(info.value)
