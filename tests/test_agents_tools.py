"""The role tools, the floor tools and tenant limits, through real AgentSessions driven by a
scripted fake LLM: what the model calls, what it gets back, what it says, what is recorded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
from livekit.agents import AgentSession, RunResult, function_tool

from agents import (
    ROLE_BRIEFS,
    DispatcherAgent,
    EndRequest,
    HandOverRequest,
    NextSpeakerRequest,
    Outcome,
    OutcomeEntry,
    PersonaAgent,
    RecordingFloor,
    RoomData,
    SalesAgent,
    build_agent,
)
from config.catalog import Catalog, parse_catalog
from config.errors import ScenarioError
from tests.fakes import (
    FakeLLM,
    FakeTTS,
    GenerationCounter,
    Step,
    call,
    cast_of,
    offline_session,
    say,
    scenario_for,
)

TIMEOUT_S = 5
MIXED = ("tim", "chris", "sam", "alex")  # mixed-ops: the enterprise tenant (acme-logistics)
INBOUND = ("alex", "sam")  # inbound-support: the starter tenant (brightcart)


def room_of(catalog: Catalog, campaign: str, persona_ids: Sequence[str], **fields: Any):
    cast = cast_of(catalog, *persona_ids)
    return RoomData(scenario_for(campaign, *cast, **fields), catalog), cast


def agent_for(catalog, persona_id, room, cast, floor=None, **kw) -> PersonaAgent:
    return build_agent(
        catalog.persona(persona_id),
        room_data=room,
        cast=cast,
        floor=floor or RecordingFloor(),
        **kw,
    )


@asynccontextmanager
async def running(agent: PersonaAgent, fake: FakeLLM) -> AsyncIterator[AgentSession]:
    session = offline_session(fake)
    async with asyncio.timeout(TIMEOUT_S):
        await session.start(agent)
        try:
            yield session
        finally:
            await session.aclose()


async def one_turn(agent: PersonaAgent, steps: list[Step], user: str = "go") -> FakeLLM:
    fake = FakeLLM(steps)
    async with running(agent, fake) as session:
        await session.run(user_input=user)
    return fake


def tool_output(fake: FakeLLM, call_index: int = 2):
    """The function_call_output the model saw on its `call_index`-th chat() call."""
    item = fake.calls[call_index - 1].last_item
    assert item.type == "function_call_output"
    return item


@pytest.fixture
def mixed(catalog: Catalog):
    return room_of(catalog, "mixed-ops", MIXED)


# ---- each tool: the call, its output, the reply, the outcome record -------------------------

TOOL_CASES = [
    # persona, tool, args, fields the output must have, recorded in the outcome
    ("tim", "lookup_load", {"load_id": "hdx-2478"}, {"id": "HDX-2478", "driver": "chris"}, False),
    (
        "tim",
        "update_eta",
        {"load_id": "HDX-2478", "eta": "2026-11-21T21:15:00+02:00", "reason": "traffic"},
        {"eta": "2026-11-21T19:15:00Z", "previous_eta": "2026-11-21T18:30:00Z"},
        True,
    ),
    (
        "tim",
        "report_incident",
        {"load_id": "HDX-2478", "kind": "Delay", "description": "Traffic near El Paso"},
        {"id": "INC-0001", "kind": "delay", "status": "delayed"},
        True,
    ),
    (
        "chris",
        "report_status",
        {"load_id": "HDX-2478", "location": "I-10 near El Paso", "eta": "2026-11-21T19:15:00Z"},
        {
            "location": "I-10 near El Paso",
            "eta": "2026-11-21T19:15:00Z",
            "issue": "",
            "board_eta": "2026-11-21T18:30:00Z",  # unchanged: dispatch owns the board's ETA
        },
        True,
    ),
    (
        "chris",
        "request_assistance",
        {"load_id": "HDX-2478", "kind": "mechanical", "details": "reefer unit alarm"},
        {"request_id": "AST-0001", "priority": "high", "status": "open"},
        True,
    ),
    (
        "sam",
        "qualify_lead",
        {
            "company": "FreshFields",
            "need": "40 Fleet Tracker units",
            "budget_per_month": 1200,
            "authority": "decision_maker",
            "timeline": "now",
        },
        {"lead_id": "LEAD-0001", "score": 100, "grade": "hot", "product": "fleet-tracker"},
        True,
    ),
    (
        "sam",
        "quote_price",
        {"product": "Dispatch Suite", "quantity": 25},
        {"quote_id": "Q-0001", "sku": "dispatch-suite", "total_per_month": 1651.1},
        True,
    ),
    (
        "alex",
        "search_knowledge_base",
        {"query": "damaged item replacement"},
        {"query": "damaged item replacement"},
        False,
    ),
    (
        "alex",
        "open_ticket",
        {"summary": "Late produce delivery", "severity": "high", "customer": "FreshFields"},
        {"ticket_id": "TKT-0001", "severity": "high", "status": "open", "opened_by": "alex"},
        True,
    ),
]


@pytest.mark.parametrize(
    ("persona_id", "tool", "args", "expected", "recorded"),
    TOOL_CASES,
    ids=[c[1] for c in TOOL_CASES],
)
async def test_tool_call_output_reply_and_outcome(
    catalog, mixed, persona_id, tool, args, expected, recorded
) -> None:
    room, cast = mixed
    agent = agent_for(catalog, persona_id, room, cast)
    fake = FakeLLM([call(tool, **args), say("Done.")])
    async with running(agent, fake) as session:
        result: RunResult[None] = await session.run(user_input="please")

    result.expect.next_event().is_function_call(name=tool)
    result.expect.next_event().is_function_call_output()
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()
    assert [m.text_content for m in session.history.messages() if m.role == "assistant"] == [
        "Done."
    ]

    out = tool_output(fake)  # what the model's next chat() saw
    assert not out.is_error, out.output
    data = json.loads(out.output)  # JSON, not a Python repr
    assert data | expected == data

    entries = room.outcome.entries
    if recorded:
        assert len(entries) == 1
        entry = entries[0]
        assert (entry.persona, entry.tool, entry.result) == (persona_id, tool, data)
        assert entry.at > 0
    else:
        assert entries == []


async def test_lookup_load_sees_changes_from_other_personas(catalog, mixed) -> None:
    room, cast = mixed
    driver = agent_for(catalog, "chris", room, cast)
    await one_turn(
        driver,
        [
            call(
                "report_status",
                load_id="HDX-2478",
                location="Las Cruces, NM",
                eta="2026-11-21T20:00:00Z",
                issue="flat tyre fixed",
            ),
            say("Rolling again."),
        ],
    )
    dispatcher = agent_for(catalog, "tim", room, cast)
    fake = await one_turn(dispatcher, [call("lookup_load", load_id="HDX-2478"), say("Seen.")])
    load = json.loads(tool_output(fake).output)
    assert load["location"] == "Las Cruces, NM"
    assert load["driver_eta"] == "2026-11-21T20:00:00Z"
    assert load["eta"] == "2026-11-21T18:30:00Z"  # the board's ETA is dispatch's to change
    assert load["issue"] == "flat tyre fixed"


async def test_tickets_have_sequential_ids_and_can_be_looked_up(catalog, mixed) -> None:
    room, cast = mixed
    agent = agent_for(catalog, "alex", room, cast)
    fake = await one_turn(
        agent,
        [
            call("open_ticket", summary="First", severity="low"),
            call("open_ticket", summary="Second", severity="urgent", customer="Jamie"),
            call("lookup_ticket", ticket_id="tkt-0002"),
            say("Your ticket is TKT-0002."),
        ],
    )
    assert [e.result["ticket_id"] for e in room.outcome.entries] == ["TKT-0001", "TKT-0002"]
    looked_up = json.loads(tool_output(fake, 4).output)
    assert looked_up["summary"] == "Second"
    assert looked_up["customer"] == "Jamie"


async def test_knowledge_base_ranks_matches(catalog, mixed) -> None:
    room, cast = mixed
    agent = agent_for(catalog, "alex", room, cast)
    fake = await one_turn(
        agent,
        [
            call("search_knowledge_base", query="my delivery address changed", limit=2),
            call("search_knowledge_base", query="quantum entanglement"),
            say("Here is what I found."),
        ],
    )
    first = json.loads(tool_output(fake, 2).output)
    assert [m["id"] for m in first["matches"]] == ["KB-104", "KB-102"]
    assert first["matches"][0]["score"] > first["matches"][1]["score"]
    none = json.loads(tool_output(fake, 3).output)
    assert none["matches"] == []
    assert "open a ticket" in none["note"]


async def test_quote_applies_volume_and_tier_discounts(catalog) -> None:
    room, cast = room_of(catalog, "mixed-ops", ("tim", "priya"))
    agent = agent_for(catalog, "priya", room, cast)
    fake = await one_turn(agent, [call("quote_price", product="fleet-tracker", quantity=200)])
    quote = json.loads(tool_output(fake).output)
    # 200 x 29.00 = 5800.00, -15% volume = 4930.00, -12% enterprise tier = 4338.40
    assert quote["list_total"] == 5800.0
    assert (quote["volume_discount"], quote["tier"], quote["tier_discount"]) == (
        0.15,
        "enterprise",
        0.12,
    )
    assert quote["total_per_month"] == 4338.4
    assert room.quotes == [quote]


async def test_quote_uses_the_campaign_tenants_tier(catalog_data) -> None:
    # let the starter tenant quote, to compare with the enterprise price in TOOL_CASES
    brightcart = next(t for t in catalog_data["tenants"] if t["id"] == "brightcart")
    brightcart["allowed_tools"].append("quote_price")
    catalog = parse_catalog(json.dumps(catalog_data))
    room, cast = room_of(catalog, "inbound-support", INBOUND)
    agent = agent_for(catalog, "sam", room, cast)
    fake = await one_turn(agent, [call("quote_price", product="dispatch-suite", quantity=25)])
    quote = json.loads(tool_output(fake).output)
    # 25 x 79.00 = 1975.00, -5% volume = 1876.25, starter tier: no discount
    assert (quote["tier"], quote["tier_discount"], quote["total_per_month"]) == (
        "starter",
        0.0,
        1876.25,
    )


async def test_qualify_lead_scores_and_next_steps(catalog, mixed) -> None:
    room, cast = mixed
    agent = agent_for(catalog, "sam", room, cast)
    fake = await one_turn(
        agent,
        [
            call(
                "qualify_lead",
                company="Tiny Co",
                need="just looking",
                budget_per_month=0,
                authority="none",
                timeline="unknown",
            ),
            call(
                "qualify_lead",
                company="Mid Co",
                need="help desk seats",
                budget_per_month=300,
                authority="influencer",
                timeline="quarter",
            ),
            say("Thanks."),
        ],
    )
    cold = json.loads(tool_output(fake, 2).output)
    warm = json.loads(tool_output(fake, 3).output)
    assert (cold["score"], cold["grade"]) == (15, "cold")
    assert (warm["score"], warm["grade"]) == (15 + 12 + 15 + 18, "warm")
    assert warm["next_step"] == "book a discovery call with the decision maker"
    assert [lead["lead_id"] for lead in room.leads] == ["LEAD-0001", "LEAD-0002"]


async def test_voicemail_takes_a_message(catalog) -> None:
    room, cast = room_of(catalog, "inbound-support", ("vera",))
    agent = agent_for(catalog, "vera", room, cast)
    fake = await one_turn(
        agent,
        [
            call(
                "take_message",
                caller_name="Jamie Rivera",
                callback_number="+1 (555) 010-2030",
                message="Call me about order 88123",
            ),
            say("I'll pass that on."),
        ],
    )
    saved = json.loads(tool_output(fake).output)
    assert saved["message_id"] == "MSG-0001"
    assert saved["callback_number"] == "+15550102030"
    [entry] = room.outcome.entries
    assert (entry.persona, entry.tool) == ("vera", "take_message")
    assert entry.args["callback_number"] == "+15550102030"


# ---- argument errors reach the model as tool errors; the session keeps running --------------

ERROR_CASES = [
    ("tim", "lookup_load", {"load_id": "XYZ-1"}, "no load 'XYZ-1' on file; known loads: HDX-2478"),
    ("tim", "update_eta", {"load_id": "HDX-2478", "eta": "tomorrow"}, "must be an ISO-8601"),
    ("tim", "update_eta", {"load_id": "HDX-2478", "eta": "2026-11-21T19:15"}, "needs a time zone"),
    (
        "tim",
        "report_incident",
        {"load_id": "HDX-2478", "kind": "fire", "description": "smoke"},
        "kind must be one of: delay, breakdown, accident, weather, other (got 'fire')",
    ),
    ("chris", "report_status", {"load_id": "HDX-2478", "location": " "}, "location must not be"),
    (
        "chris",
        "request_assistance",
        {"load_id": "HDX-2478", "kind": "pizza", "details": "hungry"},
        "kind must be one of: mechanical",
    ),
    (
        "sam",
        "qualify_lead",
        {
            "company": "X",
            "need": "seats",
            "budget_per_month": -5,
            "authority": "none",
            "timeline": "now",
        },
        "budget_per_month must be a number >= 0",
    ),
    (
        "sam",
        "qualify_lead",
        {
            "company": "X",
            "need": "seats",
            "budget_per_month": 5,
            "authority": "ceo",
            "timeline": "now",
        },
        "authority must be one of: decision_maker, influencer, none",
    ),
    ("sam", "quote_price", {"product": "hovercraft", "quantity": 1}, "known: fleet-tracker"),
    ("sam", "quote_price", {"product": "fleet-tracker", "quantity": 0}, "quantity must be between"),
    ("sam", "quote_price", {"product": "fleet-tracker", "quantity": "lots"}, "`quote_price`"),
    ("alex", "search_knowledge_base", {"query": "refund", "limit": 50}, "limit must be between"),
    ("alex", "open_ticket", {"summary": "x", "severity": "meh"}, "severity must be one of"),
    ("alex", "open_ticket", {"severity": "low"}, "Error parsing arguments for `open_ticket`"),
    ("alex", "lookup_ticket", {"ticket_id": "TKT-9999"}, "no ticket 'TKT-9999'"),
]


@pytest.mark.parametrize(
    ("persona_id", "tool", "args", "message"),
    ERROR_CASES,
    ids=[f"{c[1]}-{i}" for i, c in enumerate(ERROR_CASES)],
)
async def test_bad_arguments_are_tool_errors_and_the_session_goes_on(
    catalog, mixed, persona_id, tool, args, message
) -> None:
    room, cast = mixed
    agent = agent_for(catalog, persona_id, room, cast)
    fake = FakeLLM([call(tool, **args), say("Sorry, let me check."), say("Still here.")])
    async with running(agent, fake) as session:
        first: RunResult[None] = await session.run(user_input="please")
        out = tool_output(fake)
        assert out.is_error
        assert message in out.output
        first.expect.next_event().is_function_call(name=tool)
        first.expect.next_event().is_function_call_output()
        first.expect.next_event().is_message(role="assistant")
        # a later turn still works
        later: RunResult[None] = await session.run(user_input="anything else?")
        later.expect.next_event().is_message(role="assistant")
    assert fake.calls[2].lines()[-1] == "user: anything else?"
    assert room.outcome.entries == []


async def test_voicemail_refuses_a_bad_number(catalog) -> None:
    room, cast = room_of(catalog, "inbound-support", ("vera",))
    agent = agent_for(catalog, "vera", room, cast)
    args = {"caller_name": "Jamie", "callback_number": "call me maybe", "message": "hi"}
    fake = await one_turn(agent, [call("take_message", **args), say("Sorry?")])
    assert tool_output(fake).is_error
    assert "callback_number must be a phone number" in tool_output(fake).output
    assert room.outcome.entries == [] and room.messages == []


# ---- tenant limits: the tools the model is offered ------------------------------------------

COMMON = ["end_conversation", "hand_over"]
TENANT_CASES = [
    ("sam", "mixed-ops", ["qualify_lead", "quote_price", *COMMON]),  # enterprise
    ("sam", "inbound-support", ["qualify_lead", *COMMON]),  # starter: no quotes
    ("alex", "mixed-ops", ["search_knowledge_base", "open_ticket", "lookup_ticket", *COMMON]),
    # brightcart allows transfers to its people
    (
        "alex",
        "inbound-support",
        ["search_knowledge_base", "open_ticket", "transfer_to_human", *COMMON],
    ),
    ("casey", "mixed-ops", ["search_knowledge_base", "open_ticket", *COMMON]),  # own list
    ("chris", "mixed-ops", ["report_status", "request_assistance", *COMMON]),
    ("maria", "inbound-support", ["report_status", *COMMON]),
    ("tim", "mixed-ops", ["lookup_load", "update_eta", "report_incident", *COMMON]),
    ("dana", "inbound-support", ["lookup_load", "update_eta", *COMMON]),
]


@pytest.mark.parametrize(("persona_id", "campaign", "offered"), TENANT_CASES)
async def test_llm_is_offered_only_the_tenants_tools(
    catalog, persona_id, campaign, offered
) -> None:
    room, cast = room_of(catalog, campaign, (persona_id,))
    agent = agent_for(catalog, persona_id, room, cast)
    assert agent.offered_tool_names == offered
    fake = await one_turn(agent, [say("Hello.")])
    assert fake.calls[0].tool_names == offered  # exactly what chat() receives


async def test_a_forbidden_tool_called_anyway_is_refused_and_not_run(catalog) -> None:
    room, cast = room_of(catalog, "inbound-support", INBOUND)
    agent = agent_for(catalog, "sam", room, cast)
    fake = await one_turn(
        agent, [call("quote_price", product="fleet-tracker", quantity=1), say("Let me check.")]
    )
    out = tool_output(fake)
    assert out.is_error and out.output.startswith("Unknown function: quote_price")
    assert room.quotes == [] and room.outcome.entries == []


async def test_next_speaker_is_offered_only_to_the_moderator(catalog, mixed) -> None:
    room, cast = mixed
    plain = agent_for(catalog, "tim", room, cast)
    moderator = agent_for(catalog, "tim", room, cast, moderator=True)
    assert "next_speaker" not in plain.offered_tool_names
    assert moderator.offered_tool_names[-1] == "next_speaker"
    fake = await one_turn(moderator, [say("Hi.")])
    assert "next_speaker" in fake.calls[0].tool_names


# ---- the tenant gate cannot be bypassed by habit: no livekit function tools on role classes --

GATE_ADVICE = (
    "role tools must be plain async methods named like the tool (no decorator) and listed in "
    "config/roles.py ROLE_TOOLS: PersonaAgent offers the model only those the tenant's "
    "allowed_tools permit"
)


def test_a_role_class_decorating_a_tool_is_refused_when_defined(catalog) -> None:
    briefs_before = dict(ROLE_BRIEFS)
    with pytest.raises(TypeError) as err:

        class Sneaky(PersonaAgent, role="sales", brief="sells"):
            async def qualify_lead(self) -> str:
                return "ok"

            @function_tool
            async def quote_price(self, product: str, quantity: int) -> str:
                """Quote a price, whatever the tenant's tier."""
                return "a price"

    message = str(err.value)
    assert "Sneaky: quote_price is decorated with livekit's @function_tool" in message
    assert GATE_ADVICE in message
    # refused before it was registered: the sales role still builds the real agent
    assert ROLE_BRIEFS == briefs_before
    room, cast = room_of(catalog, "inbound-support", ("sam",))
    assert type(agent_for(catalog, "sam", room, cast)) is SalesAgent


RAW_SCHEMA = {"name": "wipe_board", "description": "x", "parameters": {"type": "object"}}


class _ToolHelpers:  # not a PersonaAgent itself: found through the subclass's MRO
    @function_tool
    async def lookup_load(self, load_id: str) -> str:
        """Look a load up."""
        return "{}"


@pytest.mark.parametrize("how", ["raw_schema", "static", "mixin", "intermediate_base"])
def test_every_form_of_livekit_tool_is_refused(how) -> None:
    with pytest.raises(TypeError, match="decorated with livekit's @function_tool") as err:
        if how == "raw_schema":

            class Raw(DispatcherAgent):
                @function_tool(raw_schema=RAW_SCHEMA)
                async def wipe_board(self, raw_arguments: dict[str, object]) -> str:
                    return "wiped"

        elif how == "static":

            class Static(DispatcherAgent):
                @staticmethod
                @function_tool
                async def wipe_board() -> str:
                    """Wipe the board."""
                    return "wiped"

        elif how == "mixin":
            # its lookup_load clashes with the role's on purpose: that tool is what is refused
            class Mixed(_ToolHelpers, DispatcherAgent):  # type: ignore[misc]
                pass

        else:

            class Base(PersonaAgent):  # a helper base with no role of its own
                @function_tool
                async def wipe_board(self) -> str:
                    """Wipe the board."""
                    return "wiped"

    assert GATE_ADVICE in str(err.value)


def test_a_tool_attached_after_definition_is_refused_when_built(catalog, mixed) -> None:
    class Later(DispatcherAgent):  # no role=: inherits the dispatcher's, is not registered
        pass

    async def wipe_board() -> str:
        """Wipe the board."""
        return "wiped"

    # after the class statement: not seen there (a deliberate attribute Later never declared)
    Later.wipe_board = function_tool(wipe_board)  # type: ignore[attr-defined]
    room, cast = mixed
    with pytest.raises(TypeError, match="role tools must be plain async methods"):
        Later(catalog.persona("tim"), room_data=room, cast=cast, floor=RecordingFloor())


# ---- floor tools: structured requests on the floor ------------------------------------------


@pytest.mark.parametrize("to", ["sales", "SAM", "  Sam "])
async def test_hand_over_by_role_or_name(catalog, to) -> None:
    room, cast = room_of(catalog, "inbound-support", INBOUND)
    floor = RecordingFloor()
    agent = agent_for(catalog, "alex", room, cast, floor)
    fake = await one_turn(
        agent,
        [call("hand_over", to=to, summary="Jamie wants 25 seats"), say("Passing you to Sam.")],
    )
    assert floor.requests == [HandOverRequest("alex", "sam", "Jamie wants 25 seats")]
    out = tool_output(fake)
    assert not out.is_error and out.output.startswith("ok:")
    assert room.outcome.entries == []  # floor requests are the floor's record, not the outcome


@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("Bob", "nobody called 'Bob' is in the room; in the room: Sam (sales)"),
        ("alex", "'alex' is you; choose someone else in the room: Sam (sales)"),
        ("support", "'support' is you"),
    ],
)
async def test_hand_over_to_unknown_or_self_is_a_tool_error(catalog, to, message) -> None:
    room, cast = room_of(catalog, "inbound-support", INBOUND)
    floor = RecordingFloor()
    agent = agent_for(catalog, "alex", room, cast, floor)
    fake = await one_turn(agent, [call("hand_over", to=to, summary="x"), say("Hmm.")])
    out = tool_output(fake)
    assert out.is_error and message in out.output
    assert floor.requests == []


async def test_end_conversation_and_next_speaker_requests(catalog, mixed) -> None:
    room, cast = mixed
    floor = RecordingFloor()
    agent = agent_for(catalog, "tim", room, cast, floor, moderator=True)
    await one_turn(
        agent,
        [
            call("next_speaker", to="driver"),
            call("end_conversation", reason="check-in complete"),
            say("Drive safe."),
        ],
    )
    assert floor.requests == [
        NextSpeakerRequest("tim", "chris"),
        EndRequest("tim", "check-in complete"),
    ]


async def test_a_refused_floor_request_is_a_tool_error(catalog, mixed) -> None:
    room, cast = mixed
    floor = RecordingFloor(refuse="the turn limit was reached")
    agent = agent_for(catalog, "tim", room, cast, floor)
    fake = await one_turn(agent, [call("end_conversation", reason="done"), say("Ok.")])
    out = tool_output(fake)
    assert out.is_error
    assert out.output == "the floor refused: the turn limit was reached"


# ---- the room's data and outcome ------------------------------------------------------------


def test_outcome_streams_entries_and_serialises(catalog) -> None:
    outcome = Outcome(clock=lambda: 123.0)
    seen: list[OutcomeEntry] = []
    outcome.subscribe(seen.append)
    outcome.subscribe(lambda entry: 1 / 0)  # a broken subscriber loses nothing
    args = {"x": [1]}
    entry = outcome.record("tim", "update_eta", args, {"ok": True})
    args["x"].append(2)  # later changes do not rewrite the record
    assert seen == [entry] == outcome.entries
    assert json.loads(json.dumps(outcome.to_dict())) == {
        "entries": [
            {"persona": "tim", "tool": "update_eta", "args": {"x": [1]}, "result": {"ok": True}}
            | {"at": 123.0}
        ]
    }


def found(room: RoomData, load_id: str) -> dict[str, Any]:
    load = room.find_load(load_id)
    assert load is not None, f"no load {load_id!r} in the room"
    return load


def test_room_data_overlays_scenario_loads_and_keeps_rooms_apart(catalog) -> None:
    context = {"loads": [{"id": "NEW-1", "origin": "Reno, NV"}, {"id": "hdx-2478", "eta": "x"}]}
    room = RoomData(scenario_for("mixed-ops", "dispatcher", context=context), catalog)
    assert found(room, "new-1")["origin"] == "Reno, NV"
    assert found(room, "HDX-2478")["eta"] == "x"
    assert found(room, "HDX-2478")["commodity"] == "refrigerated produce"  # kept
    assert room.tenant.id == "acme-logistics"
    mapping = {"loads": {"MAP-9": {"origin": "Boise, ID"}}}
    other = RoomData(scenario_for("mixed-ops", "dispatcher", context=mapping), catalog)
    assert found(other, "MAP-9")["id"] == "MAP-9"
    assert found(other, "HDX-2478")["eta"] == "2026-11-21T18:30:00Z"  # not room's copy
    assert (room.next_id("TKT"), room.next_id("TKT"), other.next_id("TKT")) == (
        "TKT-0001",
        "TKT-0002",
        "TKT-0001",
    )


def test_bad_scenario_loads_never_reach_room_data() -> None:
    # context.loads is checked with the scenario itself (config.scenario.ScenarioContext)
    with pytest.raises(ScenarioError, match=r"\$\.context\.loads\[0\]\.id: Field required"):
        scenario_for("mixed-ops", "dispatcher", context={"loads": [{"origin": "x"}]})


async def test_fake_tts_synthesises_deterministic_silence() -> None:
    fake = FakeTTS(sample_rate=16000, ms_per_char=10)
    async with asyncio.timeout(TIMEOUT_S):
        runs = [[ev.frame async for ev in fake.synthesize("hello")] for _ in range(2)]
    assert fake.synthesized == ["hello", "hello"]
    first, second = ([(f.samples_per_channel, bytes(f.data)) for f in run] for run in runs)
    assert first == second
    # at least 10 ms per character (the emitter may pad a little)
    assert sum(n for n, _ in first) >= 16000 * 50 // 1000


async def test_fake_llm_counts_overlapping_generations_and_fails_on_request(catalog) -> None:
    room, cast = room_of(catalog, "inbound-support", INBOUND)
    gate = asyncio.Event()
    shared = GenerationCounter()
    fakes = [FakeLLM([Step(text="one", wait=gate)], counter=shared), FakeLLM(counter=shared)]
    failing = FakeLLM(fail_on={1: RuntimeError("model down")})
    sessions = [offline_session(f) for f in (*fakes, failing)]
    errors = []
    sessions[2].on("error", lambda ev: errors.append(ev.error))
    async with asyncio.timeout(TIMEOUT_S):
        for session, pid in zip(sessions, ("alex", "sam", "sam"), strict=True):
            await session.start(agent_for(catalog, pid, room, cast))
        held = sessions[0].generate_reply(user_input="hi")
        await sessions[1].generate_reply(user_input="hi")  # runs while the first is held
        gate.set()
        await held
        await sessions[2].generate_reply(user_input="hi")
        for session in sessions:
            await session.aclose()
    assert shared.max_active == 2 and fakes[0].max_concurrent_generations == 2
    assert shared.active == 0 and shared.total == 2
    assert [c.index for c in failing.calls] == [1]
    assert any("model down" in str(getattr(e, "error", e)) for e in errors)
