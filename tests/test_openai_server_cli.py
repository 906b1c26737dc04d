"""`python -m workers.openai_server`: the local OpenAI-compatible server as a developer runs it,
in its own process, with the catalog it writes; a room run against that catalog speaks through
the server (the real OpenAI plugin), word for word as on the offline model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.settings import PROJECT_ROOT

pytestmark = pytest.mark.integration
KEY = "sk-a-developer-key"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LOCAL_OPENAI"))}
    return {**env, **extra}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """The server on a free port, and the catalog it wrote; its printed lines."""
    catalog = tmp_path / "served.json"
    command = ["-m", "workers.openai_server", "dispatch_checkin", "--port", "0"]
    proc = subprocess.Popen(
        [sys.executable, *command, "--write-catalog", str(catalog)],
        cwd=PROJECT_ROOT,
        env=_env(LOCAL_OPENAI_KEY=KEY),
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (lines and lines[-1].startswith("serving")):
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
    try:
        assert lines and lines[-1].startswith("serving"), lines
        yield catalog, lines
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def _simulate(catalog: Path | None, tmp_path: Path) -> dict[str, Any]:
    env = _env(LOCAL_OPENAI_KEY=KEY, TRANSCRIPTS_DIR=str(tmp_path / "transcripts"))
    if catalog is not None:
        env["CATALOG_PATH"] = str(catalog)
    out = subprocess.run(
        [sys.executable, "-m", "workers.simulate", "dispatch_checkin", "--json"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)


def _lines(result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["persona"], e["text"]) for e in result["events"] if e["event"] == "utterance"]


def test_a_room_on_the_written_catalog_speaks_through_the_server_word_for_word(
    served: tuple[Path, list[str]], tmp_path: Path
) -> None:
    catalog, printed = served
    port = int(printed[-1].rsplit(" ", 1)[1])
    assert f"tim: http://127.0.0.1:{port}/tim/v1" in printed
    tim = next(p for p in json.loads(catalog.read_text())["personas"] if p["id"] == "tim")
    assert tim["model"] == {
        "mode": "pipeline",
        "base_url": f"http://127.0.0.1:{port}/tim/v1",
        "api_key_env": "LOCAL_OPENAI_KEY",
    }
    result = _simulate(catalog, tmp_path)
    offline = _simulate(None, tmp_path)
    assert result["ended"]["reason"] == "end_conversation"
    assert _lines(result) == _lines(offline) and len(_lines(result)) == 5
    usage = {e["persona"]: e for e in result["events"] if e["event"] == "usage"}
    # the plugin's usage, as the server reported it: the served model, on this server
    (llm,) = [m for m in usage["tim"]["models"] if m["kind"] == "llm"]
    assert llm["provider"] == f"127.0.0.1:{port}" and llm["output_tokens"] > 0


def _refused(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.openai_server", *args],
        cwd=PROJECT_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_port_in_use_is_a_clear_error(served: tuple[Path, list[str]]) -> None:
    _, printed = served
    port = printed[-1].rsplit(" ", 1)[1]
    out = _refused("--port", port)
    assert out.returncode == 2
    assert f"--port {port}: cannot listen" in out.stderr


def test_a_non_loopback_host_needs_a_key_of_its_own() -> None:
    out = _refused("--host", "0.0.0.0", "--port", "0")
    assert out.returncode == 2
    assert "not loopback: set LOCAL_OPENAI_KEY" in out.stderr


def test_a_realtime_catalog_for_a_persona_whose_voice_realtime_lacks_is_refused() -> None:
    scenario = json.loads((PROJECT_ROOT / "scenarios" / "all_four.json").read_text())
    for slot in scenario["cast"]:
        if slot["role"] == "sales":
            slot["persona"] = "priya"  # voice "nova": a TTS voice the realtime model has not
    out = _refused(json.dumps(scenario), "--mode", "realtime", "--port", "0")
    assert out.returncode == 2
    assert "persona 'priya' has voice 'nova'" in out.stderr
