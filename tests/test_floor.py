"""The floor on the local stage: real AgentSessions, the product's cast/run/release path, fake
LLMs (the only fakes). Every room is bounded by a test timeout so nothing can hang."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
from livekit.agents import llm

from agents.models import SessionModels
from config.scenario import Scenario, load_scenario
from config.settings import Settings
from tests.fakes import FakeCall, FakeLLM, GenerationCounter, Step, call, say
from workers.capacity.selector import Selector
from workers.room.floor import Floor
from workers.room.runner import RoomResult
from workers.room.transcript import read_transcript
from workers.simulate import simulate

TIMEOUT = 20


def _scenario(name: str, scenarios_dir, **rules) -> Scenario:
    s = load_scenario(name, scenarios_dir=scenarios_dir)
    if rules:
        s = s.model_copy(update={"rules": s.rules.model_copy(update=rules)})
    return s


class Room:
    """Runs one scenario through workers.simulate.simulate with a fake LLM per persona."""

    def __init__(self, catalog, tmp_path, scenario: Scenario, responders: Mapping[str, object]):
        self.catalog, self.scenario = catalog, scenario
        self.settings = Settings(transcripts_dir=tmp_path / "transcripts", openai_api_key=None)
        self.selector = Selector(catalog)
        self.counter = GenerationCounter()
        self.responders = responders
        self.fakes: dict[str, FakeLLM] = {}
        self.order: list[str] = []  # persona ids in the order their models were asked
        self.floor: Floor | None = None
        self.fail_start: set[str] = set()

    def models_for(self, persona) -> SessionModels:
        if persona.id in self.fail_start:
            raise RuntimeError(f"cannot build models for {persona.id}")
        script = self.responders.get(persona.role, ())
        fake = FakeLLM(
            self._tracking(persona.id, script),
            counter=self.counter,
            fail_on=getattr(script, "fail_on", None),
        )
        self.fakes[persona.role] = fake
        return SessionModels(llm=fake)

    def _tracking(self, pid: str, script) -> Callable[[FakeCall], Step]:
        steps = list(script) if not callable(script) else None

        def respond(c: FakeCall) -> Step:
            if c.last_item.type != "function_call_output":
                self.order.append(pid)
            if steps is None:
                return script(c)
            return steps.pop(0) if steps else say(f"{pid} says line {len(self.order)}")

        return respond

    async def run(self, human_lines=None) -> RoomResult:
        def keep(floor: Floor) -> None:
            self.floor = floor

        async with asyncio.timeout(TIMEOUT):
            return await simulate(
                self.scenario,
                self.catalog,
                self.settings,
                human_lines=human_lines,
                selector=self.selector,
                models_for=self.models_for,
                on_floor=keep,
            )

    def events(self, result: RoomResult, kind: str | None = None) -> list[dict]:
        evs = read_transcript(result.transcript_path)
        return [e for e in evs if kind is None or e["event"] == kind]

    def assert_released(self) -> None:
        assert self.selector.stats()["summary"]["total_active_rooms"] == 0


def _contents(fake: FakeLLM, n: int) -> list[str]:
    return fake.calls[n].lines()


async def test_dispatch_checkin_alternates_relays_and_stops_at_the_turn_limit(
    catalog, tmp_path, scenarios_dir
):
    room = Room(catalog, tmp_path, _scenario("dispatch_checkin", scenarios_dir, max_turns=5), {})
    result = await room.run()
    assert result.reason == "max_turns" and result.turns == 5
    assert room.order == ["tim", "chris", "tim", "chris", "tim"]  # opener first, alternating
    utterances = room.events(result, "utterance")
    assert [u["persona"] for u in utterances] == room.order
    assert utterances[0]["identity"] == "agent_tim_sim-dispatch_checkin"
    # each line reaches the other persona's context, tagged with name and role
    chris_first = _contents(room.fakes["driver"], 0)
    assert "user: Tim (dispatcher): tim says line 1" in chris_first
    tim_second = _contents(room.fakes["dispatcher"], 1)
    assert "user: Chris (driver): chris says line 2" in tim_second
    # a persona's own line stays its own (assistant), never relayed back to it
    assert not any(line.startswith("user: Tim (dispatcher):") for line in tim_second)
    assert "assistant: tim says line 1" in tim_second
    assert room.counter.max_active == 1
    room.assert_released()


async def test_all_four_round_robin_order_and_one_generation_at_a_time(
    catalog, tmp_path, scenarios_dir
):
    room = Room(catalog, tmp_path, _scenario("all_four", scenarios_dir, max_turns=8), {})
    result = await room.run()
    personas = [m for m in room.events(result, "room_started")[0]["cast"]]
    ids = [p["persona"] for p in personas]
    assert room.order == ids + ids
    assert room.counter.max_active == 1 and room.counter.total >= 8
    room.assert_released()


async def test_all_four_addressed_the_named_persona_replies(catalog, tmp_path, scenarios_dir):
    responders = {
        "dispatcher": [say("Morning all. Sam, how is the FreshFields account?")],
        "sales": [say("Renewal is next month. Over to you, Alex.")],
        # a mention is not an address: Tim is named but not spoken to
        "support": [say("Tim mentioned the delay already, and I logged it.")],
    }
    scenario = _scenario("all_four", scenarios_dir, turn_policy="addressed", max_turns=4)
    room = Room(catalog, tmp_path, scenario, responders)
    result = await room.run()
    # tim names sam -> sam; sam names alex -> alex; alex addresses nobody -> back to sam,
    # whom alex was answering
    assert room.order == ["tim", "sam", "alex", "sam"]
    assert result.reason == "max_turns" and result.turns == 4
    assert "driver" not in room.fakes or not room.fakes["driver"].calls
    assert room.counter.max_active == 1
    room.assert_released()


async def test_hand_over_from_support_to_standby_sales(catalog, tmp_path, scenarios_dir):
    summary = "Caller wants 25 more Dispatch Suite seats; upgrades go through sales."
    responders = {
        "support": [
            say("BrightCart support, how can I help?"),
            call("hand_over", to="sales", summary=summary),
            say("Sales can do that. I'm passing you over now, goodbye!"),
        ],
        "sales": [say("Hi, this is sales. Twenty-five seats, got it.")],
    }
    scenario = _scenario("inbound_support", scenarios_dir, max_turns=3)
    room = Room(catalog, tmp_path, scenario, responders)
    result = await room.run(human_lines=["Hi, I want 25 more Dispatch Suite seats."])
    support_id = next(
        m["persona"]
        for m in room.events(result, "room_started")[0]["cast"]
        if m["role"] == "support"
    )
    sales_id = next(
        m["persona"] for m in room.events(result, "room_started")[0]["cast"] if m["role"] == "sales"
    )
    assert room.order == [support_id, support_id, sales_id]
    hand = room.events(result, "hand_over")
    assert hand == [hand[0]] and hand[0]["to"] == sales_id and hand[0]["summary"] == summary
    # sales stayed silent until the hand-over; then it had the summary and the recent turns
    first = _contents(room.fakes["sales"], 0)
    assert any(summary in line and "[hand-over]" in line for line in first)
    assert any("I want 25 more Dispatch Suite seats" in line for line in first)
    assert any("passing you over now" in line for line in first)
    assert result.reason == "humans_left"  # the floor turned to the caller, who had hung up
    room.assert_released()


async def test_end_conversation_ends_the_room(catalog, tmp_path, scenarios_dir):
    responders = {
        "dispatcher": [say("Hi Chris."), call("end_conversation", reason="all done"), say("Bye!")]
    }
    room = Room(catalog, tmp_path, _scenario("dispatch_checkin", scenarios_dir), responders)
    result = await room.run()
    assert result.reason == "end_conversation" and result.detail == "all done"
    assert room.order == ["tim", "chris", "tim"]
    room.assert_released()


async def test_a_model_giving_the_reason_model_failed_ends_the_room_as_end_conversation(
    catalog, tmp_path, scenarios_dir
):
    """`model_failed` is the floor's own finding (agents/fallback.py's count, by type): a
    model cannot end a room that way by choosing the words."""
    responders = {
        "dispatcher": [
            say("Hi Chris."),
            call("end_conversation", reason="model_failed"),
            say("Bye!"),
        ]
    }
    room = Room(catalog, tmp_path, _scenario("dispatch_checkin", scenarios_dir), responders)
    result = await room.run()
    assert result.reason == "end_conversation" and result.detail == "model_failed"
    room.assert_released()


async def test_loop_guard_ends_a_repeating_room(catalog, tmp_path, scenarios_dir):
    responders = {"driver": lambda c: say("Copy that.")}
    scenario = _scenario("dispatch_checkin", scenarios_dir, loop_guard=2, max_turns=50)
    room = Room(catalog, tmp_path, scenario, responders)
    result = await room.run()
    assert result.reason == "loop_guard" and "Chris" in result.detail
    assert room.order.count("chris") == 3  # said once, then repeated twice
    room.assert_released()


async def test_max_duration_ends_a_stuck_turn(catalog, tmp_path, scenarios_dir):
    never = asyncio.Event()
    responders = {"driver": [Step(text="...", wait=never)]}
    scenario = _scenario("dispatch_checkin", scenarios_dir, max_duration_s=0.5)
    room = Room(catalog, tmp_path, scenario, responders)
    result = await room.run()
    assert result.reason == "max_duration"
    assert room.events(result)[-1]["event"] == "room_ended"
    room.assert_released()


async def test_humans_left_ends_the_room_when_the_floor_turns_to_nobody(
    catalog, tmp_path, scenarios_dir
):
    scenario = _scenario("inbound_support", scenarios_dir)
    room = Room(catalog, tmp_path, scenario, {})
    result = await room.run(human_lines=["Hello?"])
    assert result.reason == "humans_left"
    assert [e["event"] for e in room.events(result) if e["event"] in ("utterance", "human")] == [
        "utterance",
        "human",
        "utterance",
    ]
    room.assert_released()


async def test_a_human_line_is_answered_by_exactly_one_persona(catalog, tmp_path, scenarios_dir):
    scenario = _scenario("all_four", scenarios_dir, turn_policy="addressed", max_turns=2)
    responders = {"dispatcher": [say("Morning everyone, the huddle is open.")]}
    room = Room(catalog, tmp_path, scenario, responders)
    result = await room.run(human_lines=["Sam, when is the FreshFields renewal?"])
    cast = {m["role"]: m["persona"] for m in room.events(result, "room_started")[0]["cast"]}
    assert room.order == [cast["dispatcher"], cast["sales"]]
    # exactly one answer, and every persona heard the caller, the silent ones included
    utterances = room.events(result, "utterance")
    assert [u["persona"] for u in utterances] == [cast["dispatcher"], cast["sales"]]
    line = '[human caller said] "Sam, when is the FreshFields renewal?"'
    assert room.floor is not None
    for pid in cast.values():
        items = room.floor.chat_ctx_of(pid).items
        texts = [i.text_content for i in items if isinstance(i, llm.ChatMessage)]
        assert line in texts, pid
    room.assert_released()


async def test_a_persona_whose_model_fails_mid_room_skips_its_turn(
    catalog, tmp_path, scenarios_dir
):
    class Failing(list):
        fail_on = {2: RuntimeError("model exploded")}

    responders = {"driver": Failing([say("Chris here, on the road."), say("never used")])}
    room = Room(
        catalog, tmp_path, _scenario("dispatch_checkin", scenarios_dir, max_turns=4), responders
    )
    result = await room.run()
    errors = room.events(result, "error")
    assert errors and errors[0]["persona"] == "chris" and "model exploded" in errors[0]["error"]
    assert result.reason == "max_turns"
    assert [u["persona"] for u in room.events(result, "utterance")] == [
        "tim",
        "chris",
        "tim",
        "tim",
    ]
    room.assert_released()


async def test_a_model_that_keeps_failing_ends_the_room_cleanly(catalog, tmp_path, scenarios_dir):
    class Failing(list):
        fail_on = {n: RuntimeError("down") for n in range(1, 10)}

    room = Room(
        catalog, tmp_path, _scenario("dispatch_checkin", scenarios_dir), {"driver": Failing()}
    )
    result = await room.run()
    assert result.reason == "persona_error" and "Chris" in result.detail
    assert room.events(result)[-1]["reason"] == "persona_error"
    room.assert_released()


async def test_a_persona_failing_to_start_tears_the_cast_down(catalog, tmp_path, scenarios_dir):
    room = Room(catalog, tmp_path, _scenario("dispatch_checkin", scenarios_dir), {})
    room.fail_start.add("chris")
    result = await room.run()
    assert result.reason == "start_failed" and "chris" in result.detail
    assert room.counter.total == 0  # nobody spoke
    events = room.events(result)
    assert events[-1]["event"] == "room_ended" and events[-1]["reason"] == "start_failed"
    room.assert_released()


async def test_cancelling_the_room_task_ends_cleanly(catalog, tmp_path, scenarios_dir):
    started, never = asyncio.Event(), asyncio.Event()

    def stuck(c: FakeCall) -> Step:
        started.set()
        return Step(text="...", wait=never)

    room = Room(catalog, tmp_path, _scenario("dispatch_checkin", scenarios_dir), {"driver": stuck})
    task = asyncio.create_task(room.run())
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    path = next((tmp_path / "transcripts").glob("*.jsonl"))
    events = read_transcript(path)
    assert events[-1]["event"] == "room_ended" and events[-1]["reason"] == "cancelled"
    assert any(e["event"] == "outcome" for e in events)
    room.assert_released()


async def test_a_human_barging_in_interrupts_the_speaker(catalog, tmp_path, scenarios_dir):
    started, never = asyncio.Event(), asyncio.Event()
    calls = {"n": 0}

    def slow_then_quick(c: FakeCall) -> Step:
        calls["n"] += 1
        if calls["n"] == 1:
            started.set()
            return Step(text="A very long answer", wait=never)
        return say("Sorry, go ahead.")

    scenario = _scenario("dispatch_checkin", scenarios_dir, max_turns=3)
    room = Room(catalog, tmp_path, scenario, {"driver": slow_then_quick})
    task = asyncio.create_task(room.run())
    async with asyncio.timeout(TIMEOUT):
        await started.wait()
    assert room.floor is not None
    room.floor.human_started_speaking()
    result = await task
    interrupted = room.events(result, "interrupted")
    assert interrupted == [interrupted[0]] and interrupted[0]["persona"] == "chris"
    assert result.reason == "max_turns"
    room.assert_released()


async def test_transcript_records_who_did_what(catalog, tmp_path, scenarios_dir):
    responders = {
        "dispatcher": [
            call("update_eta", load_id="HDX-2478", eta="2026-11-21T19:15:00Z", reason="traffic"),
            say("ETA moved, Chris."),
        ]
    }
    room = Room(
        catalog, tmp_path, _scenario("dispatch_checkin", scenarios_dir, max_turns=2), responders
    )
    result = await room.run()
    events = room.events(result)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "room_started" and kinds[-1] == "room_ended"
    cast = events[0]["cast"]
    assert {c["persona"]: c["reason"] for c in cast} == {"tim": "primary", "chris": "primary"}
    tool = room.events(result, "tool_call")[0]
    assert tool["persona"] == "tim" and tool["tool"] == "update_eta" and not tool["is_error"]
    entry = room.events(result, "outcome_entry")[0]
    assert entry["persona"] == "tim" and entry["result"]["eta"] == "2026-11-21T19:15:00Z"
    outcome = room.events(result, "outcome")[0]
    assert outcome["entries"][0]["tool"] == "update_eta"
    assert kinds.index("outcome") < kinds.index("room_ended")


async def test_voicemail_room_greets_takes_a_message_and_ends(catalog, tmp_path, scenarios_dir):
    from workers.job.plan import voicemail_scenario

    scenario = voicemail_scenario(
        load_scenario("inbound_support", scenarios_dir=scenarios_dir), catalog
    )
    responders = {
        "voicemail": [
            say("Hi, you've reached BrightCart. Everyone is busy; may I take a message?"),
            call(
                "take_message",
                caller_name="Jamie Rivera",
                callback_number="+1 555 010 2233",
                message="Blender arrived cracked, order 88123.",
            ),
            call("end_conversation", reason="message taken"),
            say("Thanks Jamie, we'll call you back today. Goodbye!"),
        ]
    }
    room = Room(catalog, tmp_path, scenario, responders)
    result = await room.run(
        human_lines=["It's Jamie Rivera, +1 555 010 2233: my blender arrived cracked."]
    )
    assert result.reason == "end_conversation"
    assert room.order == ["vera", "vera"]
    entry = room.events(result, "outcome_entry")[0]
    assert entry["persona"] == "vera" and entry["tool"] == "take_message"
    assert entry["result"]["message"] == "Blender arrived cracked, order 88123."
    room.assert_released()


async def test_moderated_the_lead_picks_who_speaks_next(catalog, tmp_path, scenarios_dir):
    responders = {
        "dispatcher": [
            call("next_speaker", to="support"),
            say("Let's start with support."),
            call("next_speaker", to="Chris"),
            say("Now the road."),
        ],
    }
    scenario = _scenario("all_four", scenarios_dir, turn_policy="moderated", max_turns=4)
    room = Room(catalog, tmp_path, scenario, responders)
    result = await room.run()
    cast = {m["role"]: m["persona"] for m in room.events(result, "room_started")[0]["cast"]}
    # lead -> its pick -> back to the lead -> its next pick; sales is never picked
    assert room.order == [cast["dispatcher"], cast["support"], cast["dispatcher"], cast["driver"]]
    assert "next_speaker" in room.fakes["dispatcher"].calls[0].tool_names
    assert "next_speaker" not in room.fakes["support"].calls[0].tool_names
    floors = [f for f in room.events(result, "floor") if f["reason"] == "chosen by the moderator"]
    assert [f["to"] for f in floors] == [cast["support"], cast["driver"]]
    room.assert_released()


async def test_closing_the_stage_from_outside_ends_the_room_as_shutdown(
    catalog, tmp_path, scenarios_dir
):
    """A job draining closes the stage while a persona speaks: the room ends as shutdown."""
    from workers.room.runner import run_room
    from workers.room.seat import seats_for
    from workers.room.stage.local import LocalStage

    started, never = asyncio.Event(), asyncio.Event()

    def stuck(c: FakeCall) -> Step:
        started.set()
        return Step(text="...", wait=never)

    scenario = _scenario("dispatch_checkin", scenarios_dir)
    selector = Selector(catalog)
    cast = selector.cast(scenario)
    fakes = {"tim": FakeLLM([say("Chris, status?")]), "chris": FakeLLM(stuck)}
    stage = LocalStage()
    try:
        task = asyncio.create_task(
            run_room(
                room="r1",
                scenario=scenario,
                catalog=catalog,
                seats=seats_for(cast.members, "r1"),
                stage=stage,
                models_for=lambda p: SessionModels(llm=fakes[p.id]),
                transcripts_dir=tmp_path,
            )
        )
        async with asyncio.timeout(TIMEOUT):
            await started.wait()
            await stage.close()
            result = await task
    finally:
        cast.release()
    assert result.reason == "shutdown"
    events = read_transcript(result.transcript_path)
    assert events[-1]["event"] == "room_ended" and events[-1]["reason"] == "shutdown"


async def test_a_lone_persona_turns_to_the_humans_not_to_itself(catalog, tmp_path, scenarios_dir):
    # support leads, sales stands by: with no caller at all, support greets once and the room
    # ends, instead of support answering itself until a limit
    room = Room(catalog, tmp_path, _scenario("inbound_support", scenarios_dir), {})
    result = await room.run(human_lines=[])
    assert result.reason == "humans_left" and result.turns == 1
    room.assert_released()


async def _run_on(stage, catalog, tmp_path, scenarios_dir, fakes, on_floor=None):
    from workers.room.runner import run_room
    from workers.room.seat import seats_for

    scenario = _scenario("dispatch_checkin", scenarios_dir)
    cast = Selector(catalog).cast(scenario)
    try:
        async with asyncio.timeout(TIMEOUT):
            return await run_room(
                room="r1",
                scenario=scenario,
                catalog=catalog,
                seats=seats_for(cast.members, "r1"),
                stage=stage,
                models_for=lambda p: SessionModels(llm=fakes[p.id]),
                transcripts_dir=tmp_path,
                on_floor=on_floor,
            )
    finally:
        cast.release()


async def test_a_persona_whose_session_closed_ends_the_room_at_once(
    catalog, tmp_path, scenarios_dir
):
    """The floor learns a session closed from livekit's public "close" event: the room ends
    on that persona's next turn, without waiting for a second failure."""
    from workers.room.stage.local import LocalStage

    floors: list[Floor] = []

    def close_chris(c: FakeCall) -> Step:
        chris = next(s for s in floors[0].speakers if s.id == "chris")
        asyncio.get_running_loop().create_task(chris.session.aclose())
        return say("Tim, let me check.")

    fakes = {
        "tim": FakeLLM([say("Chris, status?"), say("Chris?"), say("Chris, still there?")]),
        "chris": FakeLLM(close_chris),
    }
    result = await _run_on(
        LocalStage(), catalog, tmp_path, scenarios_dir, fakes, on_floor=floors.append
    )
    assert result.reason == "persona_error"
    ended = read_transcript(result.transcript_path)[-1]
    assert ended["persona"] == "chris" and ended["turns"] == 3
    errors = [e for e in read_transcript(result.transcript_path) if e["event"] == "error"]
    assert [e["consecutive"] for e in errors if e.get("persona") == "chris"] == [1]


async def test_a_stop_before_the_stage_opened_ends_the_room_without_a_turn(
    catalog, tmp_path, scenarios_dir
):
    """The job's stop signal can come while personas still join: the room ends as shutdown
    as soon as it opens, and no persona speaks."""
    from workers.room.stage.local import LocalStage

    stage = LocalStage()
    stage.stop()
    fakes = {"tim": FakeLLM([say("Chris, status?")]), "chris": FakeLLM([say("On my way.")])}
    result = await _run_on(stage, catalog, tmp_path, scenarios_dir, fakes)
    assert result.reason == "shutdown" and result.turns == 0


@pytest.mark.parametrize(("answered_by", "second"), [("floor", "sam"), ("lead", "tim")])
async def test_a_person_naming_a_persona_is_answered_by_it_unless_only_the_lead_answers(
    catalog, tmp_path, scenarios_dir, answered_by, second
):
    responders = {
        "dispatcher": [say("Morning all."), say("Tim here.")],
        "sales": [say("Sam here.")],
    }
    scenario = _scenario(
        "all_four", scenarios_dir, turn_policy="addressed", max_turns=2, answered_by=answered_by
    )
    room = Room(catalog, tmp_path, scenario, responders)
    result = await room.run(human_lines=["Sam, how is the FreshFields account?"])
    assert room.order == ["tim", second]
    answered = [e["to"] for e in room.events(result, "floor") if e["reason"] == "answers the human"]
    assert answered == [second]
