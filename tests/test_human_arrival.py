"""Humans who come late and listeners who go: in a scenario with humans the opener waits for
the first one (up to `rules.wait_for_human_s`) and greets them once; a room of personas alone
starts at once and is not ended by listeners coming and going. Real sessions on the local
stage with the offline model; the humans are the LiveKit stage's own `LiveHumans`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.offline import offline_models
from config.catalog import Catalog
from config.scenario import DEFAULT_HUMAN_WAIT_S, Scenario, load_scenario
from workers.capacity.selector import Selector
from workers.room.runner import RoomResult, run_room
from workers.room.seat import seats_for
from workers.room.stage.livekit import LiveHumans
from workers.room.stage.local import LocalStage
from workers.room.transcript import read_transcript

TIMEOUT = 60


class ArrivingHumans(LiveHumans):
    """LiveHumans that say when the floor starts waiting for someone to arrive."""

    def __init__(self) -> None:
        super().__init__()
        self.awaited = asyncio.Event()

    async def arrival(self, timeout_s: float) -> bool:
        self.awaited.set()
        return await super().arrival(timeout_s)


async def run(
    catalog: Catalog, scenario: Scenario, humans: LiveHumans, tmp_path: Any, listen: Any
) -> tuple[RoomResult, list[dict[str, Any]]]:
    cast = Selector(catalog).cast(scenario)
    names = {m.slot.role: m.persona.name for m in cast.members}
    try:
        async with asyncio.timeout(TIMEOUT):
            result = await run_room(
                room="arrival",
                scenario=scenario,
                catalog=catalog,
                seats=seats_for(cast.members, "arrival"),
                stage=LocalStage(humans=humans),
                models_for=lambda p: offline_models(p, scenario, names),
                transcripts_dir=tmp_path,
                listeners=[listen],
            )
    finally:
        cast.release()
    return result, read_transcript(result.transcript_path)


def test_which_scenarios_expect_humans_and_what_that_defaults(scenarios_dir):
    def loaded(name: str) -> Scenario:
        return load_scenario(name, scenarios_dir=scenarios_dir)

    support, checkin = loaded("inbound_support"), loaded("dispatch_checkin")
    assert support.expects_humans and support.human_wait_s == DEFAULT_HUMAN_WAIT_S
    assert support.ends_when_humans_leave
    assert not checkin.expects_humans and checkin.human_wait_s == 0
    assert not checkin.ends_when_humans_leave
    rules = checkin.rules.model_copy(update={"wait_for_human_s": 5, "end_when_humans_leave": True})
    told = checkin.model_copy(update={"rules": rules})
    assert told.human_wait_s == 5 and told.ends_when_humans_leave


async def test_the_opener_waits_for_a_late_human_and_greets_them_once(
    catalog, scenarios_dir, tmp_path
):
    """The caller joins only once the room is running: the greeting comes after they arrive."""
    scenario = load_scenario("inbound_support", scenarios_dir=scenarios_dir)
    humans = ArrivingHumans()

    async def join_late() -> None:
        await humans.awaited.wait()  # the room runs, nobody is there yet
        humans.joined("caller-late")

    def listen(event: dict[str, Any]) -> None:
        if event["event"] == "utterance":
            humans.gone("caller-late")  # greeted: hang up

    joining = asyncio.ensure_future(join_late())
    result, events = await run(catalog, scenario, humans, tmp_path, listen)
    await joining
    names = [e["event"] for e in events]
    awaited = events[names.index("human_awaited")]
    assert awaited["arrived"] is True
    assert names.index("human_awaited") < names.index("utterance")
    assert names.count("utterance") == 1 and result.reason == "humans_left"


async def test_the_wait_for_a_human_is_bounded_then_the_opener_greets(
    catalog, scenarios_dir, tmp_path
):
    scenario = load_scenario("inbound_support", scenarios_dir=scenarios_dir)
    rules = scenario.rules.model_copy(update={"wait_for_human_s": 0.2, "max_duration_s": 5})
    scenario = scenario.model_copy(update={"rules": rules})
    humans = LiveHumans()
    result, events = await run(catalog, scenario, humans, tmp_path, lambda e: None)
    names = [e["event"] for e in events]
    awaited = events[names.index("human_awaited")]
    assert awaited["arrived"] is False and 0.2 <= awaited["waited_s"] < 5
    assert "utterance" in names[names.index("human_awaited") :]
    assert result.reason == "max_duration"  # nobody came to answer the greeting


async def test_a_listener_leaving_does_not_end_a_room_of_personas(catalog, scenarios_dir, tmp_path):
    """dispatch_checkin: the personas talk to each other; a listener who comes and goes while
    they talk does not end the room, which runs to its own end."""
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    humans = LiveHumans()
    humans.joined("listener")

    def listen(event: dict[str, Any]) -> None:
        if event["event"] == "utterance" and event["turn"] == 1:
            humans.gone("listener")

    result, events = await run(catalog, scenario, humans, tmp_path, listen)
    assert humans.left()
    assert result.reason == "end_conversation"
    assert result.turns == 5
    assert "human_awaited" not in [e["event"] for e in events]


@pytest.mark.parametrize("value", [-1, 601])
def test_a_wait_out_of_bounds_is_refused_naming_the_field(scenarios_dir, value):
    from config.errors import ConfigError
    from config.scenario import scenario_from_data

    data = {
        "name": "x",
        "campaign": "freight-dispatch",
        "cast": [{"role": "dispatcher"}],
        "rules": {"wait_for_human_s": value},
    }
    with pytest.raises(ConfigError) as e:
        scenario_from_data(data, "x.json")
    assert "$.rules.wait_for_human_s" in str(e.value)
