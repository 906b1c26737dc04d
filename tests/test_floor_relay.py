"""The relay appends each line to a listener's chat context in place: no copy of the context per
listener per turn, and livekit's next reply still reads the line. The in-place path relies on
livekit's private `Agent._chat_ctx` (workers.room.floor.append_user_line), so these tests fail
loudly if livekit renames it or stops generating from it. A realtime persona keeps
`update_chat_ctx()`, the only way its remote context is synced."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from livekit.agents import Agent, llm

from tests.fakes import FakeLLM, call, offline_session, say
from tests.test_floor import Room, _scenario
from workers.room.floor import append_user_line

LINE = "Tim (dispatcher): the load is running late"


@contextmanager
def counting_copies(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts ChatContext.copy() calls (livekit's own included) while the block runs."""
    calls = [0]
    original = llm.ChatContext.copy

    def copy(self: llm.ChatContext, **kwargs: Any) -> llm.ChatContext:
        calls[0] += 1
        return original(self, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(llm.ChatContext, "copy", copy)
        yield calls


async def test_a_line_is_appended_in_place_and_the_next_reply_reads_it(monkeypatch):
    fake = FakeLLM([say("Noted.")])
    session = offline_session(fake)
    agent = Agent(instructions="You listen to the dispatcher.")
    await session.start(agent)
    try:
        before = list(agent.chat_ctx.items)

        async def copying_path(*_: Any, **__: Any) -> None:
            raise AssertionError("append_user_line took the copying path: is Agent._chat_ctx gone?")

        monkeypatch.setattr(agent, "update_chat_ctx", copying_path)
        with counting_copies(monkeypatch) as copies:
            await append_user_line(agent, session, LINE)
        assert copies == [0]
        items = agent.chat_ctx.items
        assert len(items) == len(before) + 1
        assert all(a is b for a, b in zip(items, before, strict=False))  # nothing rebuilt
        last = items[-1]
        assert isinstance(last, llm.ChatMessage)
        assert (last.role, last.text_content) == ("user", LINE)
        await session.generate_reply()
        assert f"user: {LINE}" in fake.calls[0].lines()
    finally:
        await session.aclose()


class _Realtime(llm.RealtimeModel):
    """Just enough of a realtime model for an Agent that is not started."""

    def __init__(self) -> None:
        super().__init__(
            capabilities=llm.RealtimeCapabilities(
                message_truncation=False,
                turn_detection=False,
                user_transcription=False,
                auto_tool_reply_generation=False,
                audio_output=True,
                manual_function_calls=False,
            )
        )

    def session(self, *, turn_detection_disabled: bool = False) -> llm.RealtimeSession:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


async def test_a_realtime_persona_gets_the_line_through_update_chat_ctx(monkeypatch):
    agent = Agent(instructions="You are on a realtime model.", llm=_Realtime())
    synced: list[llm.ChatContext] = []
    update = agent.update_chat_ctx

    async def spy(ctx: llm.ChatContext, **kwargs: Any) -> None:
        synced.append(ctx)
        await update(ctx, **kwargs)

    monkeypatch.setattr(agent, "update_chat_ctx", spy)
    await append_user_line(agent, offline_session(FakeLLM()), LINE)
    assert len(synced) == 1
    for last in (synced[0].items[-1], agent.chat_ctx.items[-1]):
        assert isinstance(last, llm.ChatMessage) and last.text_content == LINE


async def test_a_room_relays_and_hands_over_without_replacing_any_context(
    catalog, tmp_path, scenarios_dir, monkeypatch
):
    """Every line and the hand-over reach the listeners (test_floor.py checks what they
    read), and no persona's context is replaced by a copy along the way."""
    replaced: list[str] = []
    update = Agent.update_chat_ctx

    async def counted(self: Agent, ctx: llm.ChatContext, **kwargs: Any) -> None:
        replaced.append(type(self).__name__)
        await update(self, ctx, **kwargs)

    monkeypatch.setattr(Agent, "update_chat_ctx", counted)
    summary = "Caller wants 25 more seats."
    responders = {
        "support": [say("Support here."), call("hand_over", to="sales", summary=summary)],
        "sales": [say("Sales here, 25 seats it is.")],
    }
    scenario = _scenario("inbound_support", scenarios_dir, max_turns=3)
    room = Room(catalog, tmp_path, scenario, responders)
    result = await room.run(human_lines=["I want 25 more seats."])
    assert result.turns == 3 and room.events(result, "hand_over")
    first = room.fakes["sales"].calls[0].lines()
    assert any("[hand-over]" in line and summary in line for line in first)
    assert any("I want 25 more seats." in line for line in first)
    assert any("Support here." in line for line in first)
    assert replaced == []
    room.assert_released()
