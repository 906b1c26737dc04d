"""What each persona is told: its own instructions, its role brief, the scenario context, who
else is in the room, and the conversation rules; and which agent class each role gets."""

from __future__ import annotations

import asyncio
import json

import pytest
from livekit.agents import function_tool
from livekit.agents.llm import FunctionTool
from livekit.agents.llm.utils import build_strict_openai_schema

from agents import (
    ROLE_BRIEFS,
    DispatcherAgent,
    RecordingFloor,
    RoomData,
    build_agent,
    build_instructions,
    instructions,
)
from config import roles
from config.catalog import Persona
from tests.fakes import FakeLLM, cast_of, offline_session, say, scenario_for

CONTEXT = {
    "load_id": "HDX-2478",
    "customer": "FreshFields Grocers",
    "notes": "Receiver in Phoenix closes at 20:00 UTC.",
}


@pytest.fixture
def huddle(catalog):
    cast = cast_of(catalog, "tim", "chris", "sam", "alex")
    scenario = scenario_for(
        "mixed-ops", *cast, context=CONTEXT, description="An operations huddle."
    )
    return scenario, cast


def test_instructions_hold_persona_brief_context_roster_and_rules(catalog, huddle) -> None:
    scenario, cast = huddle
    tim = catalog.persona("tim")
    text = build_instructions(tim, scenario, cast)
    assert text.startswith(tim.instructions)
    assert ROLE_BRIEFS["dispatcher"] in text
    assert "An operations huddle." in text
    assert json.dumps(CONTEXT, indent=2, sort_keys=True) in text  # the context, as JSON
    assert "- You: Tim (dispatcher)" in text
    for line in ("- Chris (driver)", "- Sam (sales)", "- Alex (support)"):
        assert line in text
    assert "You open the conversation." in text
    assert "Speak only as yourself" in text
    assert "never write, narrate or summarise lines for anyone else" in text
    assert "short and spoken" in text
    assert "Address the others by name." in text
    assert '"Name (role): text"' in text
    assert "next_speaker" not in text


def test_each_persona_sees_the_others_but_not_itself_as_another(catalog, huddle) -> None:
    scenario, cast = huddle
    for role, persona in cast.items():
        text = build_instructions(persona, scenario, cast)
        assert f"- You: {persona.name} ({role})" in text
        assert f"- {persona.name} ({role})" not in text
        others = [p for p in cast.values() if p.id != persona.id]
        assert all(f"- {p.name} ({p.role})" in text for p in others)
        assert ("You open the conversation." in text) == (role == "dispatcher")


def test_moderator_is_told_to_pick_the_next_speaker(catalog, huddle) -> None:
    scenario, cast = huddle
    text = build_instructions(catalog.persona("tim"), scenario, cast, moderator=True)
    assert "call next_speaker" in text


def test_a_persona_alone_is_told_so(catalog) -> None:
    vera = catalog.persona("vera")
    scenario = scenario_for("inbound-support", "voicemail")
    text = build_instructions(vera, scenario, {"voicemail": vera})
    assert "- Nobody else from the team." in text
    assert ROLE_BRIEFS["voicemail"] in text


async def test_the_llm_receives_the_instructions_as_its_system_message(catalog, huddle) -> None:
    scenario, cast = huddle
    agent = build_agent(
        catalog.persona("chris"),
        room_data=RoomData(scenario, catalog),
        cast=cast,
        floor=RecordingFloor(),
    )
    fake = FakeLLM([say("Near El Paso.")])
    session = offline_session(fake)
    async with asyncio.timeout(5):
        await session.start(agent)
        await session.run(user_input="Tim (dispatcher): Chris, where are you?")
        await session.aclose()
    system = fake.calls[0].instructions
    assert system == agent.instructions
    assert "FreshFields Grocers" in system and "- Tim (dispatcher)" in system
    assert fake.calls[0].lines()[-1] == "user: Tim (dispatcher): Chris, where are you?"


def one_persona_per_role(catalog) -> dict[str, Persona]:
    """The first persona of each role in the catalog: a role added to it is covered here with
    no change to these tests."""
    first: dict[str, Persona] = {}
    for persona in catalog.personas:
        first.setdefault(persona.role, persona)
    assert set(first) == set(roles.ROLES), "every role needs a persona in config/catalog.json"
    return first


def test_every_role_has_a_brief_and_an_agent_class(catalog, huddle) -> None:
    assert set(ROLE_BRIEFS) == set(roles.ROLES)
    assert all(len(brief) > 40 and "\n" not in brief for brief in ROLE_BRIEFS.values())
    scenario, _ = huddle
    room = RoomData(scenario, catalog)
    for role, persona in one_persona_per_role(catalog).items():
        agent = build_agent(persona, room_data=room, cast={}, floor=RecordingFloor())
        assert type(agent).role == role and type(agent).__module__ == f"agents.{role}"
        assert agent.id == persona.id and agent.persona is persona and agent.room_data is room


def test_a_role_class_refuses_a_persona_of_another_role(catalog, huddle) -> None:
    scenario, cast = huddle
    with pytest.raises(ValueError, match="has role 'sales', not 'dispatcher'"):
        DispatcherAgent(
            catalog.persona("sam"),
            room_data=RoomData(scenario, catalog),
            cast=cast,
            floor=RecordingFloor(),
        )


def test_tool_schemas_describe_every_argument_and_list_choices(catalog, huddle) -> None:
    scenario, cast = huddle
    room = RoomData(scenario, catalog)
    schemas = {}
    for role, persona in one_persona_per_role(catalog).items():
        agent = build_agent(
            persona, room_data=room, cast=cast, floor=RecordingFloor(), moderator=True
        )
        # persona tools are plain function tools
        assert all(isinstance(tool, FunctionTool) for tool in agent.tools), agent.tools
        # every tool of the role, whether or not this room's tenant allows it
        names = (*roles.ROLE_TOOLS[role], *roles.COMMON_TOOLS, roles.MODERATOR_TOOL)
        for name in names:
            tool = function_tool(getattr(agent, name))
            schemas[name] = build_strict_openai_schema(tool)["function"]
    assert set(schemas) == set(roles.ALL_ROLE_TOOLS) | {*roles.COMMON_TOOLS, "next_speaker"}
    for name, fn in schemas.items():
        assert fn["description"], name
        for arg, prop in fn["parameters"]["properties"].items():
            assert prop.get("description"), f"{name}.{arg}"
    kind = schemas["report_incident"]["parameters"]["properties"]["kind"]
    assert kind["enum"] == ["delay", "breakdown", "accident", "weather", "other"]
    assert schemas["open_ticket"]["parameters"]["properties"]["severity"]["enum"] == [
        "low",
        "normal",
        "high",
        "urgent",
    ]


def test_addressed_rooms_explain_how_the_turn_passes(catalog, huddle) -> None:
    scenario, cast = huddle
    tim = catalog.persona("tim")
    rule = "Whoever you speak to by name"
    assert rule not in build_instructions(tim, scenario, cast)
    addressed = scenario.model_copy(
        update={"rules": scenario.rules.model_copy(update={"turn_policy": "addressed"})}
    )
    text = build_instructions(tim, addressed, cast)
    assert rule in text and "merely mentioning someone does not pass the turn" in text
    assert '[human IDENTITY said] "their words"' in text


def test_an_agent_is_told_what_agents_instructions_builds(catalog, huddle) -> None:
    scenario, cast = huddle
    tim = catalog.persona("tim")
    agent = build_agent(
        tim,
        room_data=RoomData(scenario, catalog),
        cast=cast,
        floor=RecordingFloor(),
        moderator=True,
    )
    assert agent.instructions == instructions.build_instructions(
        tim, scenario, cast, moderator=True
    )
    assert build_instructions is instructions.build_instructions  # one builder, not a copy


def test_the_agent_holds_its_room_data_under_that_name_only(catalog, huddle) -> None:
    """`room` on an agent would read as the LiveKit room; the scenario and shared state are
    `room_data`, and the old keyword is refused rather than silently taken."""
    scenario, cast = huddle
    data = RoomData(scenario, catalog)
    agent = build_agent(catalog.persona("tim"), room_data=data, cast=cast, floor=RecordingFloor())
    assert agent.room_data is data and not hasattr(agent, "room")
    with pytest.raises(TypeError, match="unexpected keyword argument 'room'"):
        build_agent(  # type: ignore[call-arg]  # the old keyword, passed on purpose
            catalog.persona("tim"), room=data, cast=cast, floor=RecordingFloor()
        )
