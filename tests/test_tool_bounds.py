"""Tool arguments are bounded (issue 10, item 8): every free-text field has a length limit, an
out-of-range date is a clear tool error, and phone numbers are real E.164. Each tool is called
by a scripted fake model through a real AgentSession, as the model would call it; the checks
themselves (agents.tool_args, shared by every role module) are also called directly."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Annotated, Any

import pytest
from livekit.agents.llm import ToolError
from pydantic import TypeAdapter

from agents import PersonaAgent, RecordingFloor, RoomData, build_agent, tool_args
from config.catalog import Catalog
from tests.fakes import FakeLLM, call, cast_of, offline_session, say, scenario_for

TIMEOUT_S = 5
MIXED = ("tim", "chris", "sam", "alex")  # mixed-ops: the enterprise tenant, every tool allowed


def _room(catalog: Catalog, campaign: str, persona_ids: Sequence[str]):
    cast = cast_of(catalog, *persona_ids)
    return RoomData(scenario_for(campaign, *cast), catalog), cast


def _agent(catalog: Catalog, persona_id: str, room, cast, **kw: Any) -> PersonaAgent:
    return build_agent(
        catalog.persona(persona_id), room_data=room, cast=cast, floor=RecordingFloor(), **kw
    )


async def _call(agent: PersonaAgent, tool: str, args: dict[str, Any]):
    """Have the model call `tool` with `args`; the function_call_output it then saw."""
    fake = FakeLLM([call(tool, **args), say("Noted.")])
    session = offline_session(fake)
    async with asyncio.timeout(TIMEOUT_S):
        await session.start(agent)
        try:
            await session.run(user_input="please")
        finally:
            await session.aclose()
    out = fake.calls[1].last_item
    assert out.type == "function_call_output"
    return out


@pytest.fixture
def mixed(catalog: Catalog):
    return _room(catalog, "mixed-ops", MIXED)


# ---- length limits: at the limit is fine, one more character is a clear tool error ----------

LOAD = {"load_id": "HDX-2478"}
LENGTH_CASES = [
    # persona, tool, the other arguments, the bounded field, its limit
    ("tim", "lookup_load", {}, "load_id", 64),
    ("tim", "update_eta", {**LOAD, "eta": "2026-11-21T19:15:00Z"}, "reason", 500),
    ("tim", "report_incident", {**LOAD, "kind": "delay"}, "description", 2000),
    ("chris", "report_status", {**LOAD}, "location", 200),
    ("chris", "report_status", {**LOAD, "location": "El Paso"}, "issue", 500),
    ("chris", "request_assistance", {**LOAD, "kind": "mechanical"}, "details", 2000),
    (
        "sam",
        "qualify_lead",
        {"need": "seats", "budget_per_month": 10, "authority": "none", "timeline": "now"},
        "company",
        120,
    ),
    (
        "sam",
        "qualify_lead",
        {"company": "X", "budget_per_month": 10, "authority": "none", "timeline": "now"},
        "need",
        500,
    ),
    ("sam", "quote_price", {"quantity": 1}, "product", 120),
    ("alex", "search_knowledge_base", {}, "query", 300),
    ("alex", "open_ticket", {"severity": "low"}, "summary", 1000),
    ("alex", "open_ticket", {"summary": "Late delivery", "severity": "low"}, "customer", 120),
    ("alex", "lookup_ticket", {}, "ticket_id", 64),
    ("tim", "hand_over", {"summary": "over to you"}, "to", 120),
    ("tim", "hand_over", {"to": "Chris"}, "summary", 2000),
    ("tim", "end_conversation", {}, "reason", 500),
]


@pytest.mark.parametrize(
    ("persona_id", "tool", "args", "field", "limit"),
    LENGTH_CASES,
    ids=[f"{c[1]}.{c[3]}" for c in LENGTH_CASES],
)
async def test_free_text_fields_are_bounded(
    catalog, mixed, persona_id, tool, args, field, limit
) -> None:
    room, cast = mixed
    at_limit = await _call(
        _agent(catalog, persona_id, room, cast), tool, {**args, field: "k" * limit}
    )
    assert "too long" not in at_limit.output

    over = "k" * (limit + 1)
    out = await _call(_agent(catalog, persona_id, room, cast), tool, {**args, field: f"  {over} "})
    assert out.is_error
    assert f"{field} is too long ({limit + 1} characters, limit {limit})" in out.output
    assert over not in out.output  # the refused text is not echoed back whole


async def test_the_moderators_next_speaker_is_bounded(catalog, mixed) -> None:
    room, cast = mixed
    agent = _agent(catalog, "tim", room, cast, moderator=True)
    out = await _call(agent, "next_speaker", {"to": "c" * 121})
    assert out.is_error and "to is too long (121 characters, limit 120)" in out.output


async def test_a_refused_choice_quotes_only_the_start_of_a_huge_value(catalog, mixed) -> None:
    room, cast = mixed
    args = {**LOAD, "kind": "z" * 50_000, "description": "smoke"}
    out = await _call(_agent(catalog, "tim", room, cast), "report_incident", args)
    assert out.is_error and out.output.startswith("kind must be one of: delay, breakdown")
    assert "(50000 characters)" in out.output and len(out.output) < 300


PAD = " " * 50_000  # stripped before any check: the refusal quotes the value, not the padding


@pytest.mark.parametrize(
    ("tool", "args", "quoted"),
    [
        ("update_eta", {**LOAD, "eta": f"{PAD}tomorrow{PAD}"}, "'tomorrow'"),
        ("report_incident", {**LOAD, "kind": f"{PAD}fire", "description": "x"}, "'fire'"),
        ("hand_over", {"to": f"{PAD}Bob", "summary": "x"}, "'Bob'"),
    ],
    ids=["eta", "kind", "to"],
)
async def test_a_refusal_never_echoes_a_huge_argument(catalog, mixed, tool, args, quoted) -> None:
    room, cast = mixed
    out = await _call(_agent(catalog, "tim", room, cast), tool, args)
    assert out.is_error and quoted in out.output
    assert len(out.output) < 300


async def test_bounded_optional_fields_are_still_optional(catalog, mixed) -> None:
    room, cast = mixed
    agent = _agent(catalog, "chris", room, cast)
    out = await _call(agent, "report_status", {**LOAD, "location": "El Paso", "issue": "  "})
    assert not out.is_error, out.output
    assert json.loads(out.output)["issue"] == ""


# ---- dates: out of range is a tool error, not "An internal error occurred" ------------------

OUT_OF_RANGE = ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00"]


@pytest.mark.parametrize("eta", OUT_OF_RANGE)
@pytest.mark.parametrize(
    ("persona_id", "tool", "args"),
    [("tim", "update_eta", LOAD), ("chris", "report_status", {**LOAD, "location": "El Paso"})],
    ids=["update_eta", "report_status"],
)
async def test_an_out_of_range_date_is_a_clear_tool_error(
    catalog, mixed, persona_id, tool, args, eta
) -> None:
    room, cast = mixed
    out = await _call(_agent(catalog, persona_id, room, cast), tool, {**args, "eta": eta})
    assert out.is_error
    assert out.output == (
        f"eta is out of range once converted to UTC (got {eta!r}); "
        "use a real date-time such as 2026-11-21T19:15:00Z"
    )
    assert room.outcome.entries == []


async def test_the_last_representable_instant_is_accepted(catalog, mixed) -> None:
    room, cast = mixed
    args = {**LOAD, "eta": "9999-12-31T23:59:59+00:00"}
    out = await _call(_agent(catalog, "tim", room, cast), "update_eta", args)
    assert not out.is_error, out.output
    assert json.loads(out.output)["eta"] == "9999-12-31T23:59:59Z"


async def test_a_date_too_long_to_be_one_is_refused_before_parsing(catalog, mixed) -> None:
    room, cast = mixed
    eta = "2026-11-21T19:15:00" + "0" * 5000 + "Z"
    out = await _call(_agent(catalog, "tim", room, cast), "update_eta", {**LOAD, "eta": eta})
    assert out.is_error
    assert out.output.startswith("eta is too long for a date-time (5020 characters)")


# ---- phone numbers: E.164, `+` once at the start, 8 to 15 digits ---------------------------


def _message(number: str) -> dict[str, str]:
    return {"caller_name": "Jamie Rivera", "callback_number": number, "message": "call me"}


@pytest.fixture
def voicemail(catalog: Catalog):
    room, cast = _room(catalog, "inbound-support", ("vera",))
    return room, (lambda: _agent(catalog, "vera", room, cast))


@pytest.mark.parametrize(
    ("number", "stored"),
    [
        ("+1 (555) 010-2030", "+15550102030"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+49.30.1234.5678", "+493012345678"),
        ("  +1 555 0102 ", "+15550102"),  # 8 digits: the shortest accepted
        ("+123 456 789 012 345", "+123456789012345"),  # 15 digits: the longest
    ],
)
async def test_phone_numbers_are_normalised_to_e164(voicemail, number, stored) -> None:
    room, agent = voicemail
    out = await _call(agent(), "take_message", _message(number))
    assert not out.is_error, out.output
    assert json.loads(out.output)["callback_number"] == stored
    assert room.outcome.entries[0].args["callback_number"] == stored


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("++15550102030", "it needs exactly one +, at the start"),
        ("+1+5550102030", "it needs exactly one +, at the start"),
        ("1 555 010 2030", "it needs exactly one +, at the start"),
        ("1555+0102030", "it needs exactly one +, at the start"),
        ("+0 555 010 2030", "never starts with 0"),
        ("+1 555 010", "it must have 8 to 15 digits"),
        ("+1234 5678 9012 3456", "it must have 8 to 15 digits"),
        ("+1 555 010 2030 ext 5", "it may hold only digits after the +"),
        ("+1 \uff15\uff15\uff15 010 2030", "it may hold only digits after the +"),  # fullwidth
        ("+1/555/010/2030", "it may hold only digits after the +"),
    ],
)
async def test_phone_numbers_that_are_not_e164_are_refused(voicemail, number, why) -> None:
    room, agent = voicemail
    out = await _call(agent(), "take_message", _message(number))
    assert out.is_error
    assert out.output.startswith(
        "callback_number must be a phone number in E.164 form such as +1 555 010 2030"
    )
    assert why in out.output and repr(number.strip()) in out.output
    assert room.outcome.entries == [] and room.messages == []


async def test_a_huge_phone_number_is_refused_without_echoing_it(voicemail) -> None:
    room, agent = voicemail
    out = await _call(agent(), "take_message", _message("+1" + " 5" * 5000))
    assert out.is_error and room.outcome.entries == []
    assert out.output.startswith("callback_number is too long for a phone number")
    assert len(out.output) < 200


# ---- the checks themselves: agents.tool_args, the one module every role's tools use ---------


def test_text_checks_strip_bound_and_name_the_argument() -> None:
    assert tool_args.require_text("summary", "  late pallet \n") == "late pallet"
    assert tool_args.optional_text("issue", "   ", max_len=5) == ""
    with pytest.raises(ToolError, match=r"^summary must not be empty$"):
        tool_args.require_text("summary", "  ")
    with pytest.raises(ToolError, match=r"^issue is too long \(6 characters, limit 5\)"):
        tool_args.optional_text("issue", " abcdef ", max_len=5)
    assert tool_args.one_of("kind", " Delay ", ("delay", "other")) == "delay"
    with pytest.raises(ToolError, match=r"^kind must be one of: delay, other \(got 'fire'\)$"):
        tool_args.one_of("kind", "fire", ("delay", "other"))


def test_a_refused_value_is_quoted_and_cut() -> None:
    limit = tool_args.SHOWN_CHARS
    assert tool_args.shown("x" * limit) == repr("x" * limit)
    assert tool_args.shown("x" * (limit + 1)) == f"{'x' * limit!r}... ({limit + 1} characters)"


def test_instants_and_phone_numbers_are_normalised() -> None:
    assert tool_args.parse_instant("eta", "2026-11-21T21:15:00+02:00") == "2026-11-21T19:15:00Z"
    with pytest.raises(ToolError, match=r"^eta needs a time zone"):
        tool_args.parse_instant("eta", "2026-11-21T19:15:00")
    assert tool_args.parse_phone("number", "+1 (555) 010-2030") == "+15550102030"
    with pytest.raises(ToolError, match=r"^number must be a phone number in E\.164 form"):
        tool_args.parse_phone("number", "555 010 2030")


def test_choices_reach_the_schema_and_results_reach_the_model_as_json() -> None:
    schema = TypeAdapter(Annotated[str, tool_args.enum_schema(("low", "high"))]).json_schema()
    assert schema == {"enum": ["low", "high"], "type": "string"}
    assert tool_args.as_output({"b": 1, "a": "Zürich"}) == '{"a": "Zürich", "b": 1}'
