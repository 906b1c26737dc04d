"""`transfer_to_human` in a room (the shipped `support_to_human` scenario on the local stage,
with its offline script): the floor rings through the real transfer and desk while the caller
hears hold lines, hands the caller to the person who answered and lets the personas leave, or
sends the caller to voicemail / carries on, and takes the caller back from a person who hung
up at once. Phones and the bridge are the LiveKit-free ones of tests/transfer_phones.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from agents.offline import offline_models
from config.catalog import load_catalog
from config.scenario import Scenario, load_scenario
from config.settings import PROJECT_ROOT, Settings
from tests.transfer_phones import Bridges, Phones, StayingCaller, named
from workers.humans.local import LocalDesk
from workers.humans.room_transfer import transfer_for_room
from workers.room import floor as floor_module
from workers.room.runner import run_room
from workers.room.seat import seats_for
from workers.room.stage.local import LocalStage
from workers.selector import Selector

SCENARIO = "support_to_human"
TIMEOUT = 60


def scenario(context: dict[str, Any] | None = None, **transfer: Any) -> Scenario:
    s = load_scenario(SCENARIO, scenarios_dir=PROJECT_ROOT / "scenarios")
    update: dict[str, Any] = {"transfer": s.transfer.model_copy(update=transfer)}
    if context is not None:
        update["context"] = {**s.context, **context}
    return s.model_copy(update=update)


@pytest.fixture(autouse=True)
def quick_windows(monkeypatch):
    """Hold lines and the take-back window at test speed (their lengths are the product's)."""
    monkeypatch.setattr(floor_module, "HOLD_EVERY_S", 0.05)
    monkeypatch.setattr(floor_module, "TAKE_BACK_S", 0.5)


async def run(
    tmp_path,
    sc: Scenario,
    phones: Phones | None,
    bridges: Bridges,
    caller: StayingCaller | None = None,
) -> tuple[list[dict[str, Any]], list[Sequence[str]], LocalDesk]:
    """The room to its end; `caller` (else the scenario's scripted caller) is who phoned.
    No `phones`: a room with no way to people (the simulator's)."""
    catalog = load_catalog()
    desk = LocalDesk.open(catalog, settings=Settings(humans_state_path=tmp_path / "h.json"))
    left: list[Sequence[str]] = []

    async def leave(personas: Sequence[str]) -> None:
        left.append(list(personas))
        if caller is not None:  # with the persona gone, the person speaks, then the caller
            caller.say("Hi Jamie, this is Nina, how can I help?", identity="staff_nina")
            caller.leave()

    cast = Selector(catalog).cast(sc)
    names = {m.slot.role: m.persona.name for m in cast.members}
    try:
        async with asyncio.timeout(TIMEOUT):
            result = await run_room(
                room="r1",
                scenario=sc,
                catalog=catalog,
                seats=seats_for(cast.members, "r1"),
                stage=LocalStage(sc.human_lines, humans=caller),
                models_for=lambda p: offline_models(p, sc, names),
                transcripts_dir=tmp_path,
                listeners=[caller.leave_after("transfer_failed", "utterance")] if caller else [],
                transfer=transfer_for_room(
                    room="r1",
                    scenario=sc,
                    catalog=catalog,
                    desk=desk,
                    ringer=phones,
                    bridge=bridges,
                    leave=leave,
                )
                if phones is not None
                else None,
            )
    finally:
        cast.release()
    events = [json.loads(line) for line in result.transcript_path.read_text().splitlines()]
    return events, left, desk


async def test_the_first_to_answer_is_briefed_takes_the_caller_and_the_persona_leaves(tmp_path):
    phones = Phones({"nina": "answer", "omar": "never"})
    bridges = Bridges()
    caller = StayingCaller(["I would like to talk to a person please."])
    events, left, desk = await run(tmp_path, scenario(), phones, bridges, caller)
    (requested,) = named(events, "transfer_requested")
    # no contact: every free person with the support skill (nina, omar; rosa is sales)
    assert requested["assigned"] == [] and sorted(requested["rung"]) == ["nina", "omar"]
    (claimed,) = named(events, "call_claimed")
    assert claimed == {**claimed, "human": "nina", "winner": "staff_nina"}
    (line,) = bridges.lines
    assert "Jamie Rivera" in line.briefing and "asked for a person" in line.briefing
    assert "BC-55102" in line.briefing and "talk to a person" in line.briefing
    said = named(events, "persona_line")
    assert said[-1]["kind"] == "goodbye" and "Nina Park" in said[-1]["text"]
    (gone,) = named(events, "personas_left")
    support = requested["persona"]  # alex or jordan: the campaign's least loaded
    assert left == [gone["personas"]] and set(gone["personas"]) == {support, "vera"}
    order = [e["event"] for e in events]
    assert (
        order.index("call_claimed") < order.index("hand_over_human") < order.index("personas_left")
    )
    # no persona spoke after the hand-over; the person's line is recorded, unanswered
    after = order.index("hand_over_human")
    assert not [e for e in events[after:] if e["event"] == "utterance"]
    assert [e["identity"] for e in named(events[after:], "human")] == ["staff_nina"]
    assert events[-1]["reason"] == "humans_left"
    assert line.closed  # the room's end closed the bridge, and the seat came back
    assert await desk.claim("r2", load_catalog().human_by_id["nina"]) is True
    await desk.aclose()


async def test_a_contacts_assigned_people_are_rung_first(tmp_path):
    """The scenario names the contact's assigned agent, nina: she alone is rung (omar is free
    too)."""
    phones = Phones({"nina": "answer", "omar": "answer"})
    sc = scenario({"assigned_agents": ["nina"]})
    events, _, desk = await run(tmp_path, sc, phones, Bridges())
    (requested,) = named(events, "transfer_requested")
    assert requested["assigned"] == ["nina"] and requested["rung"] == ["nina"]
    assert not phones.phones["omar"].rang.is_set()
    await desk.aclose()


async def test_the_caller_hears_a_hold_line_while_people_are_rung(tmp_path):
    phones = Phones({"nina": "held", "omar": "never"})
    bridges = Bridges()
    running = asyncio.ensure_future(run(tmp_path, scenario(), phones, bridges))
    async with asyncio.timeout(TIMEOUT):  # nina answers once the caller heard two hold lines
        await phones.phones["nina"].rang.wait()
        while True:
            paths = list(tmp_path.glob("r1*.jsonl"))
            lines = paths[0].read_text().splitlines() if paths else []
            if len([e for e in map(json.loads, lines) if e.get("kind") == "hold"]) >= 2:
                break
            await asyncio.sleep(0.01)
    phones.phones["nina"].answer()
    events, _, desk = await running
    holds = [e for e in named(events, "persona_line") if e["kind"] == "hold"]
    assert holds[0]["persona"] == named(events, "transfer_requested")[0]["persona"]
    assert "connecting you" in holds[0]["text"]
    await desk.aclose()


@pytest.mark.parametrize("behaviour", ["never", "decline"])
async def test_nobody_answering_sends_the_caller_to_voicemail(tmp_path, behaviour):
    phones = Phones({"nina": behaviour, "omar": behaviour})
    events, left, desk = await run(tmp_path, scenario(ring_timeout_s=0.3), phones, Bridges())
    (failed,) = named(events, "transfer_failed")
    reason = "no_answer" if behaviour == "never" else "all_declined"
    assert failed == {**failed, "reason": reason, "then": "voicemail"}
    (hand,) = named(events, "hand_over")
    assert hand["to"] == "vera"
    assert any(e["tool"] == "take_message" for e in named(events, "outcome_entry"))
    assert not left
    await desk.aclose()


async def test_carry_on_the_persona_tells_the_caller_and_keeps_helping(tmp_path):
    events, _, desk = await run(
        tmp_path,
        scenario(ring_timeout_s=0.3, on_no_answer="carry_on"),
        Phones({"nina": "never", "omar": "never"}),
        Bridges(),
    )
    (failed,) = named(events, "transfer_failed")
    assert failed["then"] == "carry_on"
    assert not named(events, "hand_over")
    after = [e for e in events if e["event"] == "utterance" and e["at"] >= failed["at"]]
    assert (after and after[0]["persona"] == "alex") or after[0]["role"] == "support"
    await desk.aclose()


async def test_a_person_who_hangs_up_at_once_gives_the_caller_back_to_the_persona(tmp_path):
    bridges = Bridges(hang_up_at_once=True)
    caller = StayingCaller(["I would like to talk to a person please."])
    phones = Phones({"nina": "answer", "omar": "never"})
    events, left, desk = await run(tmp_path, scenario(), phones, bridges, caller)
    (failed,) = named(events, "transfer_failed")
    assert failed == {**failed, "reason": "hung_up_at_once", "then": "carry_on"}
    assert not left  # nobody left: the persona took the caller back
    after = [e for e in named(events, "utterance") if e["at"] >= failed["at"]]
    assert after and after[0]["role"] == "support"
    assert await desk.claim("r2", load_catalog().human_by_id["nina"]) is True
    await desk.aclose()


async def test_note_taker_the_personas_stay_silent_and_keep_the_transcript(tmp_path):
    events, left, desk = await run(
        tmp_path,
        scenario(after_hand_over="note_taker"),
        Phones({"nina": "answer", "omar": "never"}),
        Bridges(),
    )
    assert named(events, "hand_over_human") and not left
    after = [e["event"] for e in events[[e["event"] for e in events].index("hand_over_human") :]]
    assert "utterance" not in after and "human" in after
    await desk.aclose()


async def test_without_a_way_to_people_the_tool_is_refused_and_the_room_goes_on(tmp_path):
    """The simulator (no LiveKit): the floor refuses the transfer, the persona carries on."""
    events, _, desk = await run(tmp_path, scenario(), None, Bridges())
    (call,) = [e for e in named(events, "tool_call") if e["tool"] == "transfer_to_human"]
    assert call["is_error"] and "no person can be rung" in call["output"]
    assert not named(events, "transfer_requested")
    await desk.aclose()
