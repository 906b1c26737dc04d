"""When a persona's model fails, through the real OpenAI plugins against workers/openai_server:
the request is retried as the connection options say; then the persona falls back (the
catalog's fallback model, else an apology: a required persona's ends the room as
`model_failed`). Never a hung room, leases always released, a rejected key reported once by
its variable's name, never the key."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from livekit.agents import RunResult

from agents.espeak_tts import SAMPLE_RATE as OFFLINE_RATE
from agents.fallback import APOLOGY_REQUIRED, MODEL_FAILED, chain
from config.logging import configure_logging
from config.scenario import load_scenario
from config.settings import Settings
from workers.capacity.selector import Selector
from workers.openai_server import Fault, OpenAIServer, scripted_brains
from workers.openai_server.rooms import KEY_ENV, brains_for, run_served_room, served_catalog

pytestmark = pytest.mark.integration
TIMEOUT_S = 60
# quick connection options: one retry, 1 s per attempt (a stalled stream gives up after it)
FAST = {"model_timeout_s": 1.0, "model_max_retry": 1, "model_retry_interval_s": 0.1}


@pytest.fixture
def logs(restore_logging: None) -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging("json", "DEBUG", stream=buf)
    yield buf


async def _room(catalog, catalog_data, scenarios_dir, tmp_path, faults, *, mode="pipeline",
                key=None, fallback=False, **settings_kw):  # fmt: skip
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    brains = brains_for(catalog, scenario, "tim", "chris")
    if fallback:  # chris's fallback model: another persona path, the same script
        brains["chris-fallback"] = scripted_brains(
            scenario, {"dispatcher": catalog.persona("tim"), "driver": catalog.persona("chris")}
        )["chris"]
    server = OpenAIServer(brains)
    await server.start()
    for route, fault, times, *persona in faults:
        server.faults.add(route, fault, times, *persona)
    served = served_catalog(
        catalog_data,
        server,
        {"tim": mode, "chris": mode},
        fallbacks={"chris": "chris-fallback"} if fallback else {},
    )
    selector = Selector(served)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(KEY_ENV, key or server.key)
            settings = Settings(_env_file=None, **{**FAST, **settings_kw})
            async with asyncio.timeout(TIMEOUT_S):  # never a hung room
                result, stage, events = await run_served_room(
                    served, scenario, settings, tmp_path, selector=selector
                )
    finally:
        await server.stop()
    assert selector.stats()["summary"]["total_active_rooms"] == 0  # leases released
    return result, stage, events, server


def _lines(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["persona"], e["text"]) for e in events if e["event"] == "utterance"]


async def _normal(catalog, catalog_data, scenarios_dir, tmp_path):
    _result, _, events, _ = await _room(catalog, catalog_data, scenarios_dir, tmp_path / "ok", [])
    return _lines(events)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("status", 500),
        Fault("status", 429, retry_after=0.2),
        Fault("stall"),
        Fault("malformed"),
    ],
    ids=["http-500", "http-429", "stalled-stream", "malformed-sse"],
)
async def test_a_failed_request_is_retried_and_the_conversation_goes_on_unchanged(
    fault, catalog, catalog_data, scenarios_dir, tmp_path
) -> None:
    normal = await _normal(catalog, catalog_data, scenarios_dir, tmp_path)
    result, _, events, server = await _room(
        catalog, catalog_data, scenarios_dir, tmp_path / "faulty", [("chat", fault, 1)]
    )
    assert server.faults.pending("chat") == 0  # the fault was met
    assert result.reason == "end_conversation"
    assert _lines(events) == normal  # the retry answered: nothing lost, nothing apologised


@pytest.mark.parametrize("status", [429, 503])
async def test_a_retry_after_the_server_asks_for_is_waited_then_the_line_is_its_own(
    status, catalog, catalog_data, scenarios_dir, tmp_path
) -> None:
    normal = await _normal(catalog, catalog_data, scenarios_dir, tmp_path)
    busy = [("chat", Fault("status", status, retry_after=1.5), 1)]
    result, _, events, server = await _room(
        catalog, catalog_data, scenarios_dir, tmp_path / "busy", busy, model_retry_after_max_s=5
    )
    assert result.reason == "end_conversation"
    assert _lines(events) == normal
    first, second = server.faults.times["chat"][:2]
    # livekit alone would have retried after MODEL_RETRY_INTERVAL_S (0.1 s here)
    assert second - first >= 1.5


async def test_a_retry_after_longer_than_the_bound_is_not_waited(
    catalog, catalog_data, scenarios_dir, tmp_path
) -> None:
    busy = [("chat", Fault("status", 429, retry_after=30), 1)]
    result, _, _events, server = await _room(
        catalog, catalog_data, scenarios_dir, tmp_path, busy, model_retry_after_max_s=2
    )
    assert result.reason == "end_conversation"
    first, second = server.faults.times["chat"][:2]
    assert second - first < 2  # livekit's own retry, not the server's 30 s


async def test_a_model_that_stays_down_makes_a_required_persona_apologise_and_end_the_room(
    catalog, catalog_data, scenarios_dir, tmp_path
) -> None:
    down = [("chat", Fault("status", 500), 100), ("speech", Fault("status", 503), 100)]
    result, stage, events, server = await _room(
        catalog, catalog_data, scenarios_dir, tmp_path, down
    )
    assert result.reason == MODEL_FAILED and "every model failed" in result.detail
    lines = _lines(events)
    assert lines[-1] == ("tim", APOLOGY_REQUIRED)  # the opener: the first to need its model
    assert len(lines) == 1
    # spoken in the offline voice, since the speech server is down too
    assert stage.audio["tim"].seconds > 1.0
    assert server.faults.requests["speech"] >= 2


async def test_the_catalog_fallback_model_answers_when_the_persona_model_is_down(
    catalog, catalog_data, scenarios_dir, tmp_path
) -> None:
    normal = await _normal(catalog, catalog_data, scenarios_dir, tmp_path)
    down = [("chat", Fault("status", 500), 100, "chris")]  # chris's own model only
    result, _, events, server = await _room(
        catalog, catalog_data, scenarios_dir, tmp_path / "fb", down, fallback=True
    )
    assert result.reason == "end_conversation"
    assert _lines(events) == normal  # the fallback model carried chris's lines
    assert server.said["chris-fallback"] == [t for p, t in normal if p == "chris"]
    assert "chris" not in server.said
    # its own model was tried and retried (FAST: one retry) before the fallback answered
    assert server.faults.requests["chat/chris"] >= 2


async def test_a_rejected_key_is_reported_once_by_name_and_the_room_ends(
    catalog, catalog_data, scenarios_dir, tmp_path, logs, caplog
) -> None:
    wrong = "sk-wrong-key-0123456789abcdef"
    caplog.set_level(logging.DEBUG)
    result, _, _events, _ = await _room(
        catalog, catalog_data, scenarios_dir, tmp_path, [], key=wrong
    )
    assert result.reason == MODEL_FAILED and "every model failed" in result.detail
    records = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    rejected = [r for r in records if r.get("event") == "model_key_rejected"]
    assert len(rejected) == 1, rejected
    assert rejected[0]["key_env"] == KEY_ENV and rejected[0]["endpoint"].startswith("127.0.0.1:")
    assert wrong not in logs.getvalue() and wrong not in caplog.text


def test_the_fallback_chain_reader_still_finds_livekit_adapters(catalog) -> None:
    from livekit.agents.llm import FallbackAdapter as LLMFallback
    from livekit.agents.tts import TTS
    from livekit.agents.tts import FallbackAdapter as TTSFallback

    from agents.espeak_tts import EspeakTTS
    from agents.fallback import ApologyLLM

    a, b = ApologyLLM("x", required=False), ApologyLLM("y", required=True)
    assert chain(LLMFallback([a, b])) == [a, b]
    voices: list[TTS] = [EspeakTTS(voice="alloy"), EspeakTTS(voice="echo")]
    assert chain(TTSFallback(voices)) == voices
    assert chain(a) == [a]


@pytest.mark.parametrize(
    "faults",
    [
        [Fault("close")],  # chris's first response: its tool call sent, then the socket goes
        [Fault("pass"), Fault("close")],  # its first line, cut in the middle of the audio
    ],
    ids=["after-a-tool-call", "mid-audio"],
)
async def test_a_realtime_socket_closed_mid_response_reconnects_and_the_room_goes_on(
    faults, catalog, catalog_data, scenarios_dir, tmp_path
) -> None:
    queued = [("realtime", f, 1, "chris") for f in faults]
    result, _stage, events, server = await _room(
        catalog, catalog_data, scenarios_dir, tmp_path, queued, mode="realtime"
    )
    assert server.faults.pending("realtime", "chris") == 0  # the socket was closed
    assert result.reason == "end_conversation"
    lines = _lines(events)
    assert [p for p, _ in lines] == ["tim", "chris", "tim", "chris", "tim"]
    assert lines[1][1].startswith("Hey Tim, Chris here.")  # the cut line still reached the room
    assert [e["tool"] for e in events if e["event"] == "outcome_entry"] == [
        "report_status",
        "update_eta",
    ]


async def test_a_failed_realtime_response_is_asked_for_again_and_the_room_goes_on(
    catalog, catalog_data, scenarios_dir, tmp_path
) -> None:
    """livekit does not retry a failed realtime response (it reconnects only a lost socket):
    the floor asks for it again, as the connection options say (FAST: one retry), and the
    persona's own line is said: no apology, the room ends as it would have."""
    result, _stage, events, server = await _room(
        catalog, catalog_data, scenarios_dir, tmp_path,
        [("realtime", Fault("status", 500), 1, "chris")], mode="realtime",
    )  # fmt: skip
    assert server.faults.pending("realtime", "chris") == 0  # it failed once
    retries = [e for e in events if e["event"] == "model_retry"]
    assert [(e["persona"], e["attempt"]) for e in retries] == [("chris", 1)]
    assert result.reason == "end_conversation"
    normal = await _normal(catalog, catalog_data, scenarios_dir, tmp_path)
    assert _lines(events) == normal
    assert all(APOLOGY_REQUIRED not in text for _, text in normal)


async def test_a_failed_realtime_response_is_apologised_for_in_the_offline_voice(
    catalog, catalog_data, scenarios_dir, tmp_path
) -> None:
    """A realtime response that fails on every retry too: the persona says the apology in
    its offline voice (eSpeak, 22.05 kHz, not the realtime model's 24 kHz), and, required,
    the room ends `model_failed`, as for a pipeline persona."""
    result, stage, events, server = await _room(
        catalog, catalog_data, scenarios_dir, tmp_path,
        [("realtime", Fault("status", 500), 2, "chris")], mode="realtime",
    )  # fmt: skip
    assert server.faults.pending("realtime", "chris") == 0  # the response and its one retry
    assert [e["attempt"] for e in events if e["event"] == "model_retry"] == [1]
    assert result.reason == MODEL_FAILED and "every model failed" in result.detail
    lines = _lines(events)
    assert lines[1] == ("chris", APOLOGY_REQUIRED)
    assert [p for p, _ in lines] == ["tim", "chris"]
    rates = {f.sample_rate for f in stage.audio["chris"].frames}
    assert OFFLINE_RATE in rates  # the apology, spoken by eSpeak in the room
    # the other persona heard it through the floor's relay
    assert any(APOLOGY_REQUIRED in text for text in server.relayed["tim"])


async def test_a_realtime_persona_with_a_rejected_key_is_reported_once_and_the_room_ends(
    catalog, catalog_data, scenarios_dir, tmp_path, logs, caplog
) -> None:
    wrong = "sk-wrong-realtime-key-0123456789"
    caplog.set_level(logging.DEBUG)
    result, _, events, _ = await _room(
        catalog, catalog_data, scenarios_dir, tmp_path, [], key=wrong, mode="realtime"
    )
    # its session cannot connect (livekit retries the socket, then closes the session): no
    # persona says a word (livekit's close may end the opener's pending turn empty first)
    assert result.reason == "persona_error"
    assert not [e for e in events if e["event"] == "utterance" and e["text"]], events
    records = [json.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    rejected = [r for r in records if r.get("event") == "model_key_rejected"]
    assert len(rejected) == 1, rejected
    assert rejected[0]["key_env"] == KEY_ENV
    assert wrong not in logs.getvalue() and wrong not in caplog.text


@pytest.mark.parametrize("required", [True, False])
async def test_the_apology_model_apologises_and_counts_the_failure(required, catalog) -> None:
    """The last LLM of every pipeline chain, through a real AgentSession: it apologises and
    counts the failure (which the floor reads, by type); it asks the floor for nothing."""
    from agents import RecordingFloor, RoomData, build_agent
    from agents.fallback import APOLOGY_OPTIONAL, ApologyLLM, model_failures
    from tests.fakes import cast_of, offline_session, scenario_for

    cast = cast_of(catalog, "tim", "chris")
    room = RoomData(scenario_for("freight-dispatch", *cast), catalog)
    floor = RecordingFloor()
    agent = build_agent(catalog.persona("chris"), room_data=room, cast=cast, floor=floor)
    apology = ApologyLLM("chris", required=required)
    assert model_failures(apology) is apology.failures
    session = offline_session(apology)
    async with asyncio.timeout(10):
        await session.start(agent)
        result: RunResult[Any] = await session.run(user_input="Tim (dispatcher): where are you?")
        await session.aclose()
    said = [e.item.text_content for e in result.events if e.item.type == "message"]
    assert floor.requests == []
    assert said == [APOLOGY_REQUIRED if required else APOLOGY_OPTIONAL]
    assert apology.failures.count == 1
