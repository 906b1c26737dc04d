"""Model construction per persona mode (no network), and the offline scripted model."""

from __future__ import annotations

import asyncio
import json
import socket
import typing
from typing import Any

import pytest
from livekit.agents import RunResult
from livekit.agents.vad import VAD
from livekit.plugins import openai, silero

from agents import RecordingFloor, RoomData, build_agent
from agents.espeak_tts import EspeakTTS
from agents.fallback import ApologyLLM, chain
from agents.models import build_models, build_text_models
from agents.offline import OfflineLLM, offline_models
from config.scenario import ScriptLine
from config.settings import Settings
from tests.fakes import cast_of, offline_session, scenario_for

KEY = "sk-test-not-a-real-key"
KEYED = Settings(_env_file=None, openai_api_key=KEY)
TIMEOUT_S = 5


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve or connect fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def vad():
    return silero.VAD.load()  # the model ships inside the wheel: offline


# ---- OpenAI plugins, construction only ------------------------------------------------------


def test_realtime_persona_gets_one_realtime_model_with_its_voice(catalog, no_network) -> None:
    tim = catalog.persona("tim")  # realtime, voice alloy, temperature 0.8 (ignored by plugin)
    models = build_models(tim, KEYED)
    assert isinstance(models.llm, openai.realtime.RealtimeModel)
    assert models.llm.model == "gpt-realtime"
    assert models.llm._opts.voice == "alloy"
    # the floor, not the server, decides who answers a human
    td = models.llm._opts.turn_detection
    assert td is not None
    assert td.create_response is False and td.interrupt_response is False
    assert (models.stt, models.tts, models.vad, models.offline) == (None, None, None, False)
    # vad=None is passed on explicitly: omitted, AgentSession would build its own VAD
    assert models.session_kwargs() == {"llm": models.llm, "stt": None, "tts": None, "vad": None}


def test_pipeline_persona_gets_vad_stt_llm_tts(catalog, vad, no_network) -> None:
    dana = catalog.persona("dana")  # pipeline, voice coral, gpt-4.1-mini at 0.6
    models = build_models(dana, KEYED, vad=vad)
    assert models.vad is vad  # the process's prewarmed VAD, not a new one
    assert isinstance(models.stt, openai.STT)
    assert models.stt.model == "gpt-4o-mini-transcribe"
    llm, apology = chain(models.llm)  # its own model, then the apology (no fallback here)
    assert isinstance(llm, openai.LLM) and isinstance(apology, ApologyLLM)
    assert llm.model == "gpt-4.1-mini"
    assert llm._opts.temperature == 0.6
    tts, offline_voice = chain(models.tts)
    assert isinstance(tts, openai.TTS) and isinstance(offline_voice, EspeakTTS)
    assert (tts.model, tts._opts.voice, tts._opts.response_format) == (
        "gpt-4o-mini-tts",
        "coral",
        "pcm",
    )
    assert models.offline is False


def test_every_catalog_persona_builds(catalog, vad, no_network) -> None:
    for persona in catalog.personas:
        models = build_models(persona, KEYED, vad=vad)
        expected = openai.realtime.RealtimeModel if persona.model.mode == "realtime" else openai.LLM
        llm, tts = chain(models.llm)[0], chain(models.tts)[0]
        assert isinstance(llm, expected), persona.id
        if persona.model.mode == "pipeline":
            assert isinstance(llm, openai.LLM) and isinstance(tts, openai.TTS)
            assert llm._opts.temperature == persona.model.temperature
            assert tts._opts.voice == persona.voice


def test_a_missing_key_or_vad_is_a_clear_error(catalog, monkeypatch, no_network) -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set: persona 'tim'"):
        build_models(catalog.persona("tim"), Settings())
    with pytest.raises(ValueError, match="pipeline persona 'dana' hears the humans, so it needs"):
        build_models(catalog.persona("dana"), KEYED)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)  # Settings read the environment
    realtime = build_models(catalog.persona("tim"), Settings()).llm
    assert isinstance(realtime, openai.realtime.RealtimeModel)


def test_text_models_use_the_pipeline_llm_even_for_realtime_personas(catalog, no_network) -> None:
    jordan = catalog.persona("jordan")  # realtime persona
    models = build_text_models(jordan, KEYED)
    assert isinstance(models.llm, openai.LLM)
    assert models.llm.model == jordan.model.llm
    assert models.llm._opts.temperature == jordan.model.temperature
    assert (models.stt, models.tts, models.vad, models.offline) == (None, None, None, False)


# ---- the offline model ----------------------------------------------------------------------

DISPATCH_SCRIPT = [
    {"tool": "lookup_load", "args": {"load_id": "HDX-2478"}, "say": "{driver}, it's {me}."},
    {"say": "Anything else on the road, {driver}? Ask {customer}."},
    {"tool": "update_eta", "args": {"load_id": "HDX-2478", "eta": "2026-11-21T19:15:00Z"},
     "say": "ETA moved to 19:15."},
    {"tool": "update_eta", "args": {"load_id": "HDX-2478", "eta": "soon"}, "say": "unreachable"},
]  # fmt: skip


def dispatch_room(catalog, script=DISPATCH_SCRIPT, campaign="freight-dispatch"):
    cast = cast_of(catalog, "tim", "chris")
    scenario = scenario_for(campaign, *cast, script={"dispatcher": script})
    return RoomData(scenario, catalog), cast


async def play(catalog, turns: int, room=None, cast=None, persona_id="tim"):
    """The persona's offline model through a real AgentSession; every event of every turn."""
    if room is None:
        room, cast = dispatch_room(catalog)
    persona = catalog.persona(persona_id)
    models = offline_models(persona, room.scenario, {r: p.name for r, p in cast.items()})
    agent = build_agent(persona, room_data=room, cast=cast, floor=RecordingFloor())
    assert isinstance(models.llm, OfflineLLM)
    session = offline_session(models.llm)
    events = []
    async with asyncio.timeout(TIMEOUT_S):
        await session.start(agent)
        for i in range(turns):
            result: RunResult[Any] = await session.run(user_input=f"turn {i}")
            events.append([_describe(e.item) for e in result.events])
        await session.aclose()
    return events, room


def _describe(item) -> tuple:
    if item.type == "message":
        return ("say", item.text_content)
    if item.type == "function_call":
        return ("call", item.name, json.loads(item.arguments), item.call_id)
    if item.type == "function_call_output":
        return ("output", item.name, item.is_error)
    return (item.type,)


async def test_offline_model_plays_its_script_through_a_session(catalog) -> None:
    events, room = await play(catalog, turns=5)
    call_1, out_1, say_1 = events[0]
    assert call_1[:3] == ("call", "lookup_load", {"load_id": "HDX-2478"})
    assert out_1 == ("output", "lookup_load", False)
    assert say_1 == ("say", "Chris, it's Tim.")  # {driver} and {me} filled in
    assert events[1] == [("say", "Anything else on the road, Chris? Ask {customer}.")]
    assert events[2][0][:2] == ("call", "update_eta")
    assert events[2][2] == ("say", "ETA moved to 19:15.")
    assert [e.tool for e in room.outcome.entries] == ["update_eta"]  # the tool really ran
    assert room.find_load("HDX-2478")["eta"] == "2026-11-21T19:15:00Z"
    # a scripted call the tool refuses: the model says so plainly instead of its line
    assert events[3][1] == ("output", "update_eta", True)
    assert events[3][2][1].startswith("(offline model) update_eta failed: eta must be")
    # script exhausted
    assert events[4] == [
        ("say", "(offline model) This is Tim's offline model, and I have nothing scripted "
         "left to say.")
    ]  # fmt: skip


async def test_offline_model_is_deterministic(catalog) -> None:
    first, _ = await play(catalog, turns=5)
    second, _ = await play(catalog, turns=5)
    assert first == second  # texts, tool arguments and call ids


async def test_offline_model_does_not_call_a_tool_it_is_not_offered(catalog) -> None:
    script = [
        {"tool": "quote_price", "args": {"product": "dispatch-suite", "quantity": 25},
         "say": "The quote is on its way."},
        {"say": "Anything else?"},
    ]  # fmt: skip
    cast = cast_of(catalog, "alex", "sam")
    scenario = scenario_for("inbound-support", *cast, script={"sales": script})  # starter tier
    events, room = await play(catalog, 2, RoomData(scenario, catalog), cast, persona_id="sam")
    assert events[0] == [("say", "(offline model) quote_price is not available to me here.")]
    assert events[1] == [("say", "Anything else?")]
    assert room.quotes == [] and room.outcome.entries == []


def test_offline_models_builds_the_offline_llm_only(catalog) -> None:
    room, _ = dispatch_room(catalog)
    models = offline_models(catalog.persona("chris"), room.scenario, {"dispatcher": "Tim"})
    assert isinstance(models.llm, OfflineLLM)
    assert (models.stt, models.tts, models.vad, models.offline) == (None, None, None, True)
    assert models.llm.lines_left == 0  # no driver lines in this scenario
    assert models.llm.model == "offline-script"


def test_offline_llm_fills_only_known_placeholders() -> None:
    lines = [ScriptLine(say="x")]
    offline = OfflineLLM(lines, me="Sam", names={"support": "Alex"})
    assert offline.fill("{me} and {support} re {order} {}") == "Sam and Alex re {order} {}"


def test_room_models_switch_on_the_key(catalog):
    """One switch: no key -> the offline model with the offline voice (the listener also
    hears with VAD + pocketsphinx); a key -> the catalog's OpenAI models."""
    from agents.espeak_tts import EspeakTTS
    from agents.models import room_models
    from agents.offline import OfflineLLM
    from agents.sphinx_stt import SphinxSTT
    from config.scenario import load_scenario
    from tests.conftest import SCENARIOS_DIR

    scenario = load_scenario("dispatch_checkin", scenarios_dir=SCENARIOS_DIR)
    names = {"dispatcher": "Tim", "driver": "Chris"}
    vad = typing.cast(VAD, object())  # handed on only, never run
    keyless = Settings(_env_file=None, openai_api_key="")
    lead = room_models(
        catalog.persona("tim"), scenario, names, hears_humans=True, vad=vad, settings=Settings()
    )
    other = room_models(
        catalog.persona("chris"), scenario, names, hears_humans=False, vad=vad, settings=keyless
    )
    assert isinstance(lead.llm, OfflineLLM) and isinstance(lead.tts, EspeakTTS)
    assert isinstance(lead.stt, SphinxSTT) and lead.vad is vad
    assert isinstance(other.tts, EspeakTTS) and other.stt is None and other.vad is None
    assert lead.tts.voice != other.tts.voice
    keyed = room_models(
        catalog.persona("dana"),
        scenario,
        names,
        hears_humans=True,
        vad=vad,
        settings=KEYED,
    )
    assert not keyed.offline and keyed.llm.provider != "offline"


def test_the_logged_choice_says_what_room_models_builds(catalog):
    from agents.models import room_models_choice

    personas = catalog.personas
    assert room_models_choice(personas, Settings())["models"] == "offline"
    blank = Settings(_env_file=None, openai_api_key="   ")
    assert room_models_choice(personas, blank) == room_models_choice(personas, Settings())
    assert room_models_choice(personas, KEYED) == {
        "models": "openai",
        "voice": "catalog voices",
        "endpoints": "api.openai.com",
    }


# ---- only the persona that hears humans pays for hearing -------------------------------------


async def test_only_the_pipeline_persona_that_hears_humans_gets_vad_and_stt(catalog, no_network):
    """With a key, a pipeline persona that only hears the room through the floor's text relay
    gets LLM + TTS: no VAD and no STT, so its session starts no VAD stream, no STT task and
    no turn detector (and needs no VAD passed in)."""
    from agents.models import room_models
    from workers.room.stage import make_session

    cast = cast_of(catalog, "dana", "maria")  # both pipeline personas
    scenario = scenario_for("freight-dispatch", *cast)
    names = {role: p.name for role, p in cast.items()}
    vad = object()

    def models(persona_id: str, *, hears: bool, vad=vad):
        persona = catalog.persona(persona_id)
        return room_models(persona, scenario, names, hears_humans=hears, vad=vad, settings=KEYED)

    lead = models("dana", hears=True)
    assert lead.vad is vad and isinstance(lead.stt, openai.STT)
    other = models("maria", hears=False)
    assert (other.vad, other.stt) == (None, None)
    assert isinstance(chain(other.llm)[0], openai.LLM)
    assert isinstance(chain(other.tts)[0], openai.TTS)
    assert chain(other.tts)[0]._opts.voice == "shimmer"
    session = make_session(other)
    assert (session.vad, session.stt, session.turn_detection) == (None, None, None)
    assert make_session(lead).turn_detection == "vad"  # the listener: VAD end of speech
    # its interruption mode is chosen, never livekit's pick (its hosted detector in `dev`)
    assert make_session(lead).interruption_detection == "vad"
    assert make_session(lead, "adaptive").interruption_detection == "adaptive"
    assert models("maria", hears=False, vad=None).vad is None
    for m in (lead, other):
        await m.llm.aclose()  # the session's connection prewarm, never let out (no_network)


def test_every_persona_of_a_room_gets_its_own_model_instances(catalog, no_network):
    """Never shared between sessions: livekit subscribes each session to its models' metrics
    events, so a shared LLM or TTS would count every session's usage in every session."""
    from agents.models import room_models

    cast = cast_of(catalog, "dana", "maria", "sam", "alex")  # pipeline personas, one room
    scenario = scenario_for("mixed-ops", *cast)
    names = {role: p.name for role, p in cast.items()}
    vad = typing.cast(VAD, object())  # handed on only, never run
    built = [
        room_models(p, scenario, names, hears_humans=True, vad=vad, settings=KEYED)
        for p in [*cast.values(), catalog.persona("dana")]  # the same persona twice, too
    ]
    for kind in ("llm", "tts", "stt"):
        objects = [getattr(m, kind) for m in built]
        assert len({id(o) for o in objects}) == len(objects), kind


async def test_each_session_counts_only_its_own_models_usage(catalog, tmp_path, scenarios_dir):
    """Through a room: one model per persona, and each session's usage is exactly what its own
    model reported (one token in and one out per call), not the whole room's."""
    from tests.test_floor import Room, _scenario

    room = Room(catalog, tmp_path, _scenario("all_four", scenarios_dir, max_turns=8), {})
    result = await room.run()
    assert result.turns == 8 and room.floor is not None
    by_role = {s.persona.role: s for s in room.floor.speakers}
    assert len({id(f) for f in room.fakes.values()}) == 4
    for role, fake in room.fakes.items():
        usage = [u for u in by_role[role].session.usage.model_usage if u.type == "llm_usage"]
        assert len(fake.calls) == 2, role  # 8 turns, 4 personas
        assert [(u.input_tokens, u.output_tokens) for u in usage] == [(2, 2)], role
