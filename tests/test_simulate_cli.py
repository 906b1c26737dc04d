"""`workers.simulate` with no API key and no network: main(argv) in-process (one test runs
`python -m workers.simulate` as a program), and the pieces of it that main() relies on
(overrides, `simulate()`'s leases)."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from agents.offline import offline_models
from config.errors import ConfigError
from config.scenario import load_scenario
from config.settings import Settings
from tests.conftest import CATALOG_PATH, CliResult
from workers.capacity.selector import Selector
from workers.room.transcript import read_transcript
from workers.simulate import _with_overrides, main, simulate

Run = Callable[..., CliResult]
PINNED_INACTIVE = {  # a scenario whose only persona is inactive: no cast
    "name": "pinned_inactive",
    "campaign": "inbound-support",
    "cast": [{"role": "sales", "persona": "morgan", "opens": True}],
    "rules": {"turn_policy": "addressed"},
}


@pytest.fixture
def run(run_main, monkeypatch, tmp_path, restore_logging) -> Run:
    """`python -m workers.simulate ARGS...` in-process, transcripts under tmp_path."""
    monkeypatch.setenv("TRANSCRIPTS_DIR", str(tmp_path / "transcripts"))
    return lambda *args: run_main(main, *args)


@pytest.mark.subprocess(argv=["-m", "workers.simulate", json.dumps(PINNED_INACTIVE)])
def test_runs_as_a_program_and_exits_with_mains_status(program):
    assert program.returncode == 3, program.stderr  # no cast: main's status is the exit status
    assert "no cast" in program.stderr and "Traceback" not in program.stderr


# A model that cannot be reached (a closed port on loopback): every persona turn fails.
UNREACHABLE_MODEL = {"OPENAI_API_KEY": "sk-not-a-key", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}


@pytest.mark.subprocess(argv=["-m", "workers.simulate", "dispatch_checkin"], env=UNREACHABLE_MODEL)
def test_a_failing_model_is_one_error_line_per_failure_not_a_traceback(program):
    """21.5: livekit logs each failed model call with its chained traceback (dozens of lines
    each); the command prints one line per failure."""
    assert program.returncode == 0, program.stderr
    assert "ended: persona_error" in program.stdout
    lines = program.stderr.splitlines()
    assert "Traceback" not in program.stderr, program.stderr
    assert lines and all("APIConnectionError" in line for line in lines), lines


def test_demo_scenario_runs_offline_and_writes_a_transcript(run):
    proc = run("dispatch_checkin")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("model: offline (no OPENAI_API_KEY set)")
    assert any(line.startswith("Tim (dispatcher): Chris, it's Tim at dispatch") for line in lines)
    assert any(line.startswith("Chris (driver): Hey Tim, Chris here") for line in lines)
    assert any("[tool] update_eta" in line for line in lines)
    assert any(line.startswith("ended: end_conversation") for line in lines)
    path = lines[-1].removeprefix("transcript: ")
    events = read_transcript(Path(path))
    assert events[0]["event"] == "room_started" and events[-1]["event"] == "room_ended"
    assert sum(e["event"] == "utterance" for e in events) == 5


def test_json_output_and_injected_human_line(run):
    proc = run("inbound_support", "--json", "--human", "Hi, my order 88123 arrived broken.")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["model"] == "offline"
    humans = [e for e in doc["events"] if e["event"] == "human"]
    assert [h["text"] for h in humans] == ["Hi, my order 88123 arrived broken."]
    # the caller had one line; then the floor turned to them and they had hung up
    assert doc["ended"]["reason"] == "humans_left"
    assert os.path.exists(doc["transcript"])


def test_bad_input_exits_2(run):
    proc = run("no_such_scenario")
    assert proc.returncode == 2
    assert "no such scenario" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("dispatch_checkin", "--max-turns", "0")
    assert proc.returncode == 2


def test_a_tool_no_tenant_allows_is_said_before_the_room(run, monkeypatch, tmp_path):
    """A new role's tool left out of every tenant's allowed_tools: the one warning line shows
    even though the room's own logging is quiet."""
    data = json.loads(CATALOG_PATH.read_text())
    for tenant in data["tenants"]:
        tenant["allowed_tools"].remove("update_eta")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(data))
    monkeypatch.setenv("CATALOG_PATH", str(catalog))
    proc = run("dispatch_checkin")
    assert proc.returncode == 0, proc.stderr
    warned = [
        line for line in proc.stderr.splitlines() if "persona_tool_allowed_by_no_tenant" in line
    ]
    listing = [p["id"] for p in data["personas"] if "update_eta" in p["tools"]]
    assert len(warned) == len(listing) >= 1, proc.stderr
    assert all("tool=update_eta" in line for line in warned)
    assert [p for line in warned for p in re.findall(r"persona=(\S+)", line)] == listing


def test_no_cast_exits_3(run):
    proc = run(json.dumps(PINNED_INACTIVE))
    assert proc.returncode == 3, proc.stderr
    assert "no cast" in proc.stderr


def test_max_turns_cannot_exceed_the_schemas_cap(scenarios_dir):
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    assert _with_overrides(scenario, 7).rules.max_turns == 7
    assert _with_overrides(scenario, 500).rules.max_turns == 500
    assert _with_overrides(scenario, None) is scenario
    with pytest.raises(ConfigError) as err:
        _with_overrides(scenario, 100_000)
    message = str(err.value)
    assert "\n" not in message  # one line for main() to print
    assert message.startswith("--max-turns: $.rules.max_turns:") and "500" in message
    with pytest.raises(ConfigError, match="--max-turns"):
        _with_overrides(scenario, 0)


async def test_an_optional_persona_that_fails_to_start_gives_its_lease_back_at_once(
    catalog, scenarios_dir, tmp_path
):
    """inbound_support: sales stands by (optional). Its start fails; its lease must be free
    while the room still runs, not only when the room ends."""
    scenario = load_scenario("inbound_support", scenarios_dir=scenarios_dir)
    selector = Selector(catalog)
    names: dict[str, str] = {}

    def models_for(persona):
        if persona.role == "sales":
            raise RuntimeError("sales model unavailable")
        return offline_models(persona, scenario, names)

    busy_while_running: list[dict[str, int]] = []

    def during(ev: dict) -> None:
        if ev["event"] == "utterance":
            busy_while_running.append(
                {p["role"]: p["active"] for p in selector.stats()["personas"] if p["active"]}
            )

    settings = Settings(_env_file=None, transcripts_dir=tmp_path, openai_api_key=None)
    async with asyncio.timeout(30):
        result = await simulate(
            scenario,
            catalog,
            settings,
            human_lines=[],
            selector=selector,
            models_for=models_for,
            listeners=[during],
        )
    assert result.reason == "humans_left"  # support greeted; the room went on without sales
    assert busy_while_running and busy_while_running[0] == {"support": 1}
    errors = [e for e in read_transcript(result.transcript_path) if e["event"] == "error"]
    assert [(e["role"], e["stage"]) for e in errors] == [("sales", "start")]
    assert selector.stats()["summary"]["total_active_rooms"] == 0
