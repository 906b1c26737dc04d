"""`python -m workers.simulate` end to end in a subprocess, with no API key and no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from config.settings import PROJECT_ROOT
from workers.transcript import read_transcript


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LIVEKIT_"))}
    env["TRANSCRIPTS_DIR"] = str(tmp_path / "transcripts")
    return subprocess.run(
        [sys.executable, "-m", "workers.simulate", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_demo_scenario_runs_offline_and_writes_a_transcript(tmp_path):
    proc = _run(tmp_path, "dispatch_checkin")
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


def test_json_output_and_injected_human_line(tmp_path):
    proc = _run(
        tmp_path, "inbound_support", "--json", "--human", "Hi, my order 88123 arrived broken."
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["model"] == "offline"
    humans = [e for e in doc["events"] if e["event"] == "human"]
    assert [h["text"] for h in humans] == ["Hi, my order 88123 arrived broken."]
    # the caller had one line; then the floor turned to them and they had hung up
    assert doc["ended"]["reason"] == "humans_left"
    assert os.path.exists(doc["transcript"])


def test_bad_input_exits_2(tmp_path):
    proc = _run(tmp_path, "no_such_scenario")
    assert proc.returncode == 2
    assert "no such scenario" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run(tmp_path, "dispatch_checkin", "--max-turns", "0")
    assert proc.returncode == 2


def test_no_cast_exits_3(tmp_path):
    pinned = {
        "name": "pinned_inactive",
        "campaign": "inbound-support",
        "cast": [{"role": "sales", "persona": "morgan", "opens": True}],
        "rules": {"turn_policy": "addressed"},
    }
    proc = _run(tmp_path, json.dumps(pinned))
    assert proc.returncode == 3, proc.stderr
    assert "no cast" in proc.stderr
