"""What a call cost: prices in the catalog, one `usage` record per persona at the end of each
room (livekit's own usage counts), and `python -m workers.report` summing rooms from their
transcripts."""

from __future__ import annotations

import asyncio
import json
from itertools import pairwise
from pathlib import Path

import pytest

from agents.models import SessionModels
from config.catalog import parse_catalog
from config.errors import ConfigError
from config.prices import ModelPrice, Prices, usage_cost
from config.scenario import load_scenario
from config.settings import Settings
from tests.fakes import FakeLLM, call, say
from workers.report import main as report_main
from workers.room.transcript import read_transcript
from workers.simulate import main as simulate_main
from workers.simulate import simulate

MINI = ModelPrice(
    model="gpt-4.1-mini",
    rates={"input_tokens": 0.4, "cached_input_tokens": 0.1, "output_tokens": 1.6},
)
REALTIME = ModelPrice(
    model="gpt-realtime",
    rates={
        "input_tokens": 4.0,
        "cached_input_tokens": 0.4,
        "input_audio_tokens": 32.0,
        "cached_input_audio_tokens": 0.4,
        "output_tokens": 16.0,
        "output_audio_tokens": 64.0,
    },
)
PRICES = Prices(models=(MINI, REALTIME))


def llm_usage(model: str, **counts: float) -> dict:
    return {"kind": "llm", "provider": "openai", "model": model, **counts}


def test_cached_tokens_are_priced_once_at_their_own_rate():
    usage = llm_usage("gpt-4.1-mini", input_tokens=1000, input_cached_tokens=400, output_tokens=200)
    expected = (600 * 0.4 + 400 * 0.1 + 200 * 1.6) / 1e6
    assert usage_cost(usage, PRICES) == pytest.approx(expected)


def test_realtime_audio_and_text_tokens_are_priced_apart():
    usage = llm_usage(
        "gpt-realtime",
        input_tokens=1000,
        input_audio_tokens=800,
        input_cached_tokens=150,
        input_cached_audio_tokens=100,
        output_tokens=500,
        output_audio_tokens=400,
    )
    text_in, cached_text, audio_in, cached_audio = 200 - 50, 50, 800 - 100, 100
    expected = (
        text_in * 4.0
        + cached_text * 0.4
        + audio_in * 32.0
        + cached_audio * 0.4
        + 100 * 16.0
        + 400 * 64.0
    ) / 1e6
    assert usage_cost(usage, PRICES) == pytest.approx(expected)


def test_speech_is_priced_by_minute_and_character():
    tts = ModelPrice(model="voice-x", rates={"characters": 15.0, "audio_minutes": 0.5})
    usage = {"kind": "tts", "provider": "openai", "model": "voice-x", "characters_count": 2000}
    usage["audio_duration"] = 90.0
    assert usage_cost(usage, Prices(models=(tts,))) == pytest.approx(2000 * 15 / 1e6 + 0.75)


def test_the_offline_voice_is_free_and_an_unpriced_model_is_not():
    offline = {"kind": "llm", "provider": "offline", "model": "offline-script", "output_tokens": 9}
    assert usage_cost(offline, PRICES) == 0.0
    assert usage_cost(llm_usage("gpt-5", input_tokens=10), PRICES) is None


@pytest.mark.parametrize(
    ("rates", "path"),
    [
        ({"input_tokens": -1}, "$.prices.models[0].rates.input_tokens"),
        ({"tokens": 1}, "$.prices.models[0].rates.tokens"),
        ({}, "$.prices.models[0].rates"),
    ],
)
def test_a_bad_price_is_refused_naming_its_path(catalog_data, rates, path):
    catalog_data["prices"] = {"models": [{"model": "gpt-4.1-mini", "rates": rates}]}
    with pytest.raises(ConfigError) as e:
        parse_catalog(json.dumps(catalog_data), "catalog.json")
    assert f"catalog.json: {path}" in str(e.value)


def test_the_shipped_catalog_prices_every_openai_model_its_personas_use(catalog):
    for persona in catalog.personas:
        m = persona.model
        used = [m.realtime_model] if m.mode == "realtime" else [m.llm, m.stt, m.tts]
        for model in used:
            assert catalog.prices.find("openai", model), f"{persona.id}: {model} has no price"


async def test_each_persona_of_a_room_gets_a_usage_record_with_its_cost(
    catalog_data, scenarios_dir, tmp_path
):
    """Two personas on a priced (fake) model: each one's usage is livekit's count of its own
    model calls, and its cost follows the catalog's prices."""
    catalog_data["prices"] = {
        "currency": "EUR",
        "models": [
            {"provider": "fake", "model": "fake-llm", "rates": {"input_tokens": 1e6}},
        ],
    }
    catalog = parse_catalog(json.dumps(catalog_data), "catalog.json")
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    fakes = {
        "tim": FakeLLM([say("Chris, where are you?"), call("end_conversation", reason="done")]),
        "chris": FakeLLM([say("Near El Paso.")]),
    }
    settings = Settings(_env_file=None, transcripts_dir=tmp_path, openai_api_key=None)
    async with asyncio.timeout(30):
        result = await simulate(
            scenario, catalog, settings, models_for=lambda p: SessionModels(llm=fakes[p.id])
        )
    events = read_transcript(result.transcript_path)
    usage = {e["persona"]: e for e in events if e["event"] == "usage"}
    assert set(usage) == {"tim", "chris"}
    for pid, record in usage.items():
        calls = len(fakes[pid].calls)  # the fake reports one prompt token per call
        assert record["tenant"] == "acme-logistics" and record["currency"] == "EUR"
        (model,) = record["models"]
        assert (model["kind"], model["provider"], model["input_tokens"]) == ("llm", "fake", calls)
        assert record["cost"] == pytest.approx(calls) and not record["unpriced"]
    names = [e["event"] for e in events]
    assert names.index("usage") < names.index("outcome") < names.index("room_ended")


@pytest.fixture
def rooms(run_main, monkeypatch, tmp_path) -> Path:
    """Three offline rooms, a cut one and a file that is not text."""
    folder = tmp_path / "transcripts"
    monkeypatch.setenv("TRANSCRIPTS_DIR", str(folder))
    for name in ("dispatch_checkin", "dispatch_checkin", "sales_support_handoff"):
        assert run_main(simulate_main, name).returncode == 0
    cut = folder / "cut.jsonl"
    cut.write_text(
        json.dumps(
            {
                "event": "room_started",
                "room": "cut",
                "campaign": "freight-dispatch",
                "tenant": "acme-logistics",
                "at": 1.0,
                "cast": [{"persona": "tim", "role": "dispatcher"}],
            }
        )
        + '\n{"event": "utter'
    )
    (folder / "noise.jsonl").write_bytes(b"\xff\xfe\x00")
    return folder


def test_the_report_sums_rooms_per_persona_and_lists_bad_files(run_main, rooms):
    result = run_main(report_main, str(rooms), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    groups = {g["key"]: g for g in report["groups"]}
    assert report["rooms"] == 4
    assert groups["tim"]["rooms"] == 3 and groups["tim"]["partial_rooms"] == 1
    assert groups["tim"]["endings"] == {"end_conversation": 2, "unfinished": 1}
    assert groups["tim"]["turns"] == 10 and groups["tim"]["cost"] == 0.0
    assert groups["tim"]["usage"]["llm.output_tokens"] > 0
    assert [p["file"] for p in report["partial"]] == [str(rooms / "cut.jsonl")]
    assert [u["file"] for u in report["unreadable"]] == [str(rooms / "noise.jsonl")]


def test_the_report_groups_by_tenant_campaign_and_day_as_a_table(run_main, rooms):
    by_tenant = run_main(report_main, str(rooms), "--by", "tenant")
    assert by_tenant.returncode == 0
    header, *lines = by_tenant.stdout.splitlines()
    assert header.split()[:3] == ["tenant", "rooms", "turns"]
    assert lines[0].split()[:2] == ["acme-logistics", "3"]
    assert any(line.startswith("partial: ") for line in lines)
    assert any(line.startswith("unreadable: ") for line in lines)
    by_campaign = json.loads(run_main(report_main, str(rooms), "--by", "campaign", "--json").stdout)
    assert {g["key"] for g in by_campaign["groups"]} == {"freight-dispatch", "inbound-support"}
    by_day = json.loads(run_main(report_main, str(rooms), "--by", "day", "--json").stdout)
    assert sum(g["rooms"] for g in by_day["groups"]) == 4


def test_the_report_refuses_a_path_that_does_not_exist(run_main, tmp_path):
    result = run_main(report_main, str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"workers.report: no such file or folder: {tmp_path / 'nope'}"


def test_each_turn_records_the_floor_gap_and_the_model_latency(run_main, monkeypatch, tmp_path):
    """`utterance.latency`: the floor's gap since the previous line ended (none before the
    first line) and livekit's own time to the reply's first token."""
    monkeypatch.setenv("TRANSCRIPTS_DIR", str(tmp_path))
    result = run_main(simulate_main, "dispatch_checkin", "--json")
    assert result.returncode == 0, result.stderr
    lines = [e for e in json.loads(result.stdout)["events"] if e["event"] == "utterance"]
    assert len(lines) >= 3
    assert lines[0]["latency"]["floor_gap_s"] is None
    for before, line in pairwise(lines):
        latency = line["latency"]
        assert 0 <= latency["floor_gap_s"] <= line["started"] - before["at"] + 0.002
        assert latency["llm_ttft_s"] >= 0


def _transfer_room(folder: Path, room: str, legs: dict[str, str], winner: str | None) -> None:
    """A room's transcript as a transfer to people writes it: each ring leg's start and
    outcome, the winner's hand-over and their time on the line."""
    records: list[dict] = [
        {
            "event": "room_started",
            "room": room,
            "campaign": "inbound-support",
            "tenant": "brightcart",
            "at": 1.0,
            "cast": [{"persona": "alex", "role": "support"}],
        }
    ]
    for human, status in legs.items():
        records.append({"event": "ring_leg", "human": human, "status": "ringing"})
        records.append({"event": "ring_leg", "human": human, "status": status})
    if winner is not None:
        records.append({"event": "hand_over_human", "from_persona": "alex", "human": winner})
        records.append(
            {"event": "human_left", "human": winner, "reason": "hung_up", "talked_s": 90}
        )
    records.append({"event": "room_ended", "reason": "humans_left", "duration_s": 120, "turns": 3})
    (folder / f"{room}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_the_report_by_human_agent_is_each_persons_call_log(run_main, tmp_path):
    _transfer_room(tmp_path, "r1", {"ana": "answered", "ben": "cancelled"}, "ana")
    _transfer_room(tmp_path, "r2", {"ana": "declined", "ben": "answered"}, "ben")
    _transfer_room(tmp_path, "r3", {"ana": "timed_out", "ben": "timed_out"}, None)
    result = run_main(report_main, str(tmp_path), "--by", "human_agent", "--json")
    assert result.returncode == 0, result.stderr
    groups = {g["key"]: g for g in json.loads(result.stdout)["groups"]}
    assert set(groups) == {"ana", "ben"}
    ana = groups["ana"]
    assert (ana["rooms"], ana["calls_handled"], ana["talk_s"]) == (3, 1, 90)
    assert ana["ring_legs"] == {"answered": 1, "declined": 1, "timed_out": 1}
    assert groups["ben"]["ring_legs"] == {"answered": 1, "cancelled": 1, "timed_out": 1}
    table = run_main(report_main, str(tmp_path), "--by", "human_agent")
    header, *lines = table.stdout.splitlines()
    assert header.split()[:3] == ["human_agent", "rooms", "calls"]
    assert any(line.split()[:3] == ["ana", "3", "1"] for line in lines)
