"""The paid-model path, through the real, unmodified OpenAI plugins: every persona's LLM, TTS,
STT or realtime model talks to workers/openai_server on loopback, which answers from the same
scenario script as the offline model. A room on it must go exactly as on the offline model
(lines, tool calls, the tenant's gate), with audio spoken, and each line in the transcript
exactly what the server said."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agents.offline import offline_models
from config.scenario import load_scenario
from config.settings import Settings
from tests.openai_rooms import HearingStage
from tests.test_session_hears_audio import spoken
from workers.openai_server import OpenAIServer
from workers.openai_server.rooms import KEY_ENV, brains_for, run_served_room, served_catalog
from workers.room.stage.local import LocalStage

pytestmark = pytest.mark.integration
TIMEOUT_S = 90


def _lines(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["persona"], e["text"]) for e in events if e["event"] == "utterance"]


def _tools(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["persona"], e["tool"]) for e in events if e["event"] == "outcome_entry"]


async def _offline_room(catalog, scenario, tmp_path):
    """The same room on the offline model (text only): what the served room must equal."""
    names = {p.role: p.name for p in (catalog.persona("tim"), catalog.persona("chris"))}
    return await run_served_room(
        catalog,
        scenario,
        Settings(_env_file=None),
        tmp_path / "offline",
        LocalStage(scenario.human_lines),
        lambda p: offline_models(p, scenario, names),
    )


@pytest.mark.parametrize("mode", ["pipeline", "realtime"])
async def test_dispatch_checkin_on_the_served_models_goes_as_on_the_offline_model(
    mode, openai_server, catalog, catalog_data, scenarios_dir, tmp_path
) -> None:
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    served = served_catalog(catalog_data, openai_server, {"tim": mode, "chris": mode})
    settings = Settings(_env_file=None)  # no OPENAI_API_KEY: each persona's own key variable
    async with asyncio.timeout(TIMEOUT_S):
        result, stage, events = await run_served_room(
            served, scenario, settings, tmp_path / "served"
        )
        offline_result, _, offline_events = await _offline_room(catalog, scenario, tmp_path)
    assert result.reason == offline_result.reason == "end_conversation"
    lines = _lines(events)
    assert lines == _lines(offline_events)  # the same conversation, word for word
    assert _tools(events) == _tools(offline_events)  # the same tools really ran
    assert [p for p, _ in lines] == ["tim", "chris", "tim", "chris", "tim"]
    # each line in the transcript is exactly what the server said for that persona
    for persona in ("tim", "chris"):
        assert [t for p, t in lines if p == persona] == openai_server.said[persona]
    # both personas spoke audio through their plugin (the server's eSpeak, 24 kHz)
    for persona in ("tim", "chris"):
        audio = stage.audio[persona]
        assert audio.seconds > 2.0, persona
        assert {f.sample_rate for f in audio.frames} == {24_000}
    assert openai_server.faults.requests.get("realtime" if mode == "realtime" else "chat", 0) >= 5


GATED_SCRIPT = {
    "support": [
        {"say": "Alex here. Sam from sales is with us."},
        {"say": "Anything else for sales?"},
    ],
    "sales": [
        {"tool": "quote_price", "args": {"product": "dispatch-suite", "quantity": 25},
         "say": "The quote is on its way."},
        {"tool": "qualify_lead", "args": {"company": "BrightCart", "need": "25 seats",
         "budget_per_month": 2000, "authority": "decision_maker", "timeline": "quarter"},
         "say": "You are qualified."},
    ],
}  # fmt: skip


async def test_the_tenant_tier_gates_the_served_models_tools_as_the_offline_model(
    catalog, catalog_data, tmp_path
) -> None:
    """BrightCart's starter tier forbids quote_price: the plugin never offers it to the server,
    whose model then says so, as the offline model does; qualify_lead is offered and runs."""
    from tests.fakes import scenario_for

    scenario = scenario_for(
        "inbound-support", "support", "sales", script=GATED_SCRIPT,
        rules={"turn_policy": "round_robin", "max_turns": 4},
    )  # fmt: skip
    server = OpenAIServer(brains_for(catalog, scenario, "alex", "sam"))
    await server.start()
    try:
        served = served_catalog(
            catalog_data, server, {"alex": "pipeline", "sam": "realtime"}, ("jordan", "priya")
        )
        settings = Settings(_env_file=None)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(KEY_ENV, server.key)
            async with asyncio.timeout(TIMEOUT_S):
                result, stage, events = await run_served_room(
                    served, scenario, settings, tmp_path / "served"
                )
    finally:
        await server.stop()
    names = {p.role: p.name for p in (catalog.persona("alex"), catalog.persona("sam"))}
    alone = served_catalog(catalog_data, server, {}, ("jordan", "priya"))
    async with asyncio.timeout(TIMEOUT_S):
        _, _, offline_events = await run_served_room(
            alone, scenario, Settings(_env_file=None), tmp_path / "offline",
            LocalStage(), lambda p: offline_models(p, scenario, names),
        )  # fmt: skip
    assert result.reason == "max_turns"
    lines = _lines(events)
    assert lines == _lines(offline_events)
    assert ("sam", "(offline model) quote_price is not available to me here.") in lines
    assert ("sam", "You are qualified.") in lines
    assert _tools(events) == _tools(offline_events) == [("sam", "qualify_lead")]
    assert stage.audio["sam"].seconds > 1.0 and stage.audio["alex"].seconds > 1.0


@pytest.mark.parametrize("mode", ["pipeline", "realtime"])
async def test_a_served_lead_hears_a_spoken_line_and_exactly_one_persona_answers(
    mode, catalog, catalog_data, scenarios_dir, tmp_path
) -> None:
    """The caller speaks; the lead's plugin sends the audio to the server (a pipeline STT to
    /audio/transcriptions, a realtime model into its input buffer, cut by the server VAD),
    which hears it with pocketsphinx; the floor gets that line once and one persona answers."""
    scenario = load_scenario("inbound_support", scenarios_dir=scenarios_dir)
    said = scenario.human_lines[0]
    server = OpenAIServer(
        brains_for(catalog, scenario, "alex", "sam"), human_lines=scenario.human_lines
    )
    await server.start()
    stage = HearingStage(spoken(said))
    utterances: list[dict[str, Any]] = []

    def listen(event: dict[str, Any]) -> None:
        if event["event"] == "utterance":
            utterances.append(event)
            if len(utterances) == 2:  # the greeting, then the answer to the human
                stage.hang_up()

    try:
        served = served_catalog(
            catalog_data, server, {"alex": mode, "sam": mode}, ("jordan", "priya")
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(KEY_ENV, server.key)
            async with asyncio.timeout(TIMEOUT_S):
                result, _, events = await run_served_room(
                    served, scenario, Settings(_env_file=None), tmp_path, stage, listeners=[listen]
                )
    finally:
        await server.stop()
    assert server.heard == [said]  # the server heard the line, once
    humans = [e for e in events if e["event"] == "human"]
    assert [h["text"] for h in humans] == [said]
    after = events[events.index(humans[0]) + 1 :]
    answers = [e for e in after if e["event"] == "utterance"]
    assert len(answers) == 1 and answers[0]["persona"] == "alex"
    assert answers[0]["text"] == server.said["alex"][1]
    assert result.reason == "humans_left"
