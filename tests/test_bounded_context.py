"""Each persona's chat context stays bounded: its instructions and its newest items, cut in
place by the floor (workers.room.floor.bound_context) so a long room does not make every reply
slower than the last. Rooms run on the local stage with real AgentSessions and fake LLMs; the
fake records the exact context each reply was generated from."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from livekit.agents import Agent, llm

from tests.fakes import FakeCall, FakeLLM, Step, call, offline_session, say
from tests.test_floor import TIMEOUT, Room, _scenario
from tests.test_floor_relay import _Realtime
from workers.room import floor as floor_module
from workers.room.floor import Floor, bound_context, own_context
from workers.simulate import simulate

TOOL_ITEMS = ("function_call", "function_call_output")


def said(item: llm.ChatItem) -> tuple[str, str | None]:
    """A message's role and text (anything else in a context fails the test here)."""
    assert isinstance(item, llm.ChatMessage), item
    return item.role, item.text_content


def conversation(items: list[llm.ChatItem]) -> list[llm.ChatItem]:
    """The items after the leading instructions (system / developer messages)."""
    k = 0
    while k < len(items):
        item = items[k]
        if not (item.type == "message" and item.role in ("system", "developer")):
            break
        k += 1
    return items[k:]


def unpaired(items: list[llm.ChatItem]) -> list[str]:
    """Tool calls kept without their output, and outputs kept without their call."""
    calls = {i.call_id for i in items if i.type == "function_call"}
    outputs = {i.call_id for i in items if i.type == "function_call_output"}
    return sorted(calls ^ outputs)


async def run_room(room: Room, bound: int | None, checks: list[dict[str, int]]) -> Any:
    """Run `room` with every persona's context bounded to `bound` items (None: the product's
    default); after each relay (the floor's `floor` event) note each context's size."""
    floors: list[Floor] = []

    def keep(floor: Floor) -> None:
        if bound is not None:
            floor.context_items = bound
        floors.append(floor)
        room.floor = floor

    def after_relay(ev: dict[str, Any]) -> None:
        if ev["event"] == "floor" and floors:
            checks.append({s.id: len(s.agent.chat_ctx.items) for s in floors[0].speakers})
            for s in floors[0].speakers:
                items = list(s.agent.chat_ctx.items)
                first = items[0]
                # the instructions always stay first
                assert first.type == "message" and first.role == "system", s.id
                assert not unpaired(items), (s.id, unpaired(items))

    async with asyncio.timeout(TIMEOUT):
        return await simulate(
            room.scenario,
            room.catalog,
            room.settings,
            selector=room.selector,
            models_for=room.models_for,
            on_floor=keep,
            listeners=[after_relay],
        )


def every_call(room: Room) -> Iterator[tuple[str, FakeCall]]:
    for role, fake in room.fakes.items():
        for c in fake.calls:
            yield role, c


@pytest.mark.integration  # a room of hundreds of turns
async def test_a_long_room_keeps_every_context_within_the_bound(catalog, tmp_path, scenarios_dir):
    room = Room(catalog, tmp_path, _scenario("all_four", scenarios_dir, max_turns=60), {})
    checks: list[dict[str, int]] = []
    result = await run_room(room, 10, checks)
    assert result.reason == "max_turns" and result.turns == 60
    assert len(checks) >= 59
    # instructions + at most 10 items, in every context after every relay
    assert max(n for c in checks for n in c.values()) <= 11
    # and what each model was asked with: the bound, plus the reply it is generating
    for role, c in every_call(room):
        assert len(conversation(c.items)) <= 10, role
        assert said(c.items[0])[0] == "system" and "You are" in c.instructions, role
    room.assert_released()


async def test_the_newest_lines_are_the_ones_kept(catalog, tmp_path, scenarios_dir):
    room = Room(catalog, tmp_path, _scenario("all_four", scenarios_dir, max_turns=40), {})
    result = await run_room(room, 8, [])
    assert result.turns == 40
    utterances = room.events(result, "utterance")
    tim = room.fakes["dispatcher"].calls[-1]  # Tim's last turn: turn 37
    assert len(room.fakes["dispatcher"].calls) == 10 and utterances[36]["persona"] == "tim"
    # exactly the 8 lines said before it, in order: its own as assistant, the others relayed
    expected = [
        ("assistant", u["text"])
        if u["persona"] == "tim"
        else ("user", f"{u['name']} ({u['role']}): {u['text']}")
        for u in utterances[28:36]
    ]
    assert [said(i) for i in conversation(tim.items)] == expected
    assert said(tim.items[0])[0] == "system"


def lookup_every_turn(c: FakeCall) -> Step:
    """Every turn: a tool call, then a line once its output is back (3 items a turn)."""
    if c.last_item.type == "function_call_output":
        return say(f"Load checked, call {c.index}.")
    return call("lookup_load", load_id="HDX-2478")


@pytest.mark.integration  # a room of hundreds of turns
async def test_a_tool_call_is_never_kept_without_its_output(catalog, tmp_path, scenarios_dir):
    """Bounds of every size cut a dispatcher turn (call, output, line) at every position:
    a call is never kept without its output, nor an output without its call."""
    for bound in range(4, 10):
        scenario = _scenario("dispatch_checkin", scenarios_dir, max_turns=24)
        room = Room(catalog, tmp_path / str(bound), scenario, {"dispatcher": lookup_every_turn})
        result = await run_room(room, bound, [])  # run_room checks every relay, too
        assert result.turns == 24
        outputs = [c for _, c in every_call(room) if c.last_item.type == "function_call_output"]
        assert len(outputs) == 12  # the tool ran on every dispatcher turn
        for role, c in every_call(room):
            assert not unpaired(c.items), (bound, role, c.lines())
            assert len(conversation(c.items)) <= bound + 2, (bound, role)  # + this turn's call


@pytest.mark.integration  # a room of hundreds of turns
async def test_the_products_bound_holds_a_room_past_it(catalog, tmp_path, scenarios_dir):
    """The default bound: a room long enough that every context passes it."""
    bound = floor_module.CONTEXT_MAX_ITEMS
    turns = bound + 40  # two personas: each context gains ~1 item per turn
    room = Room(
        catalog, tmp_path, _scenario("dispatch_checkin", scenarios_dir, max_turns=turns), {}
    )
    checks: list[dict[str, int]] = []
    result = await run_room(room, None, checks)
    assert result.turns == turns
    assert max(n for c in checks for n in c.values()) == bound + 1  # reached, never passed


# ---- the adapter: livekit's own context, changed in place ---------------------------------


async def test_the_next_reply_is_generated_from_the_bounded_context():
    """`own_context` is the object livekit generates from (a private attribute: this fails
    loudly if livekit renames it or copies it before each reply)."""
    fake = FakeLLM([say("Noted.")])
    session = offline_session(fake)
    agent = Agent(instructions="You listen to the dispatcher.")
    await session.start(agent)
    try:
        ctx = own_context(agent, session)
        assert ctx is not None
        for k in range(30):
            ctx.add_message(role="user", content=f"line {k}")
        bound_context(agent, session, 5)
        assert len(agent.chat_ctx.items) == 6  # instructions + 5
        await session.generate_reply()
        (seen,) = fake.calls
        assert seen.lines()[0] == "system: You listen to the dispatcher."
        assert seen.lines()[1:] == [f"user: line {k}" for k in range(25, 30)]
    finally:
        await session.aclose()


async def test_a_realtime_personas_context_is_left_to_its_server():
    agent = Agent(instructions="You are on a realtime model.", llm=_Realtime())
    session = offline_session(FakeLLM())
    assert own_context(agent, session) is None
    for k in range(10):
        await floor_module.append_user_line(agent, session, f"line {k}")
    bound_context(agent, session, 3)
    assert len(conversation(list(agent.chat_ctx.items))) == 10
