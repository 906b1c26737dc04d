"""Settings from env and .env; secrets never shown; logging binds context on every event."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from pydantic import ValidationError

from config.logging import bind_context, clear_context, configure_logging, get_logger
from config.settings import Settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for name in (
        "LIVEKIT_URL",
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
        "OPENAI_API_KEY",
        "AGENT_NAME",
        "LOAD_THRESHOLD",
        "LOG_FORMAT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults():
    s = Settings()
    assert s.agent_name == "multi-persona"
    assert s.catalog_path.name == "catalog.json" and s.catalog_path.is_file()
    assert s.livekit_missing() == ["LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"]


def test_env_and_dotenv(monkeypatch, tmp_path):
    (tmp_path / ".env").write_text("AGENT_NAME=from-dotenv\nLIVEKIT_API_SECRET=s3cret-value\n")
    monkeypatch.setenv("LIVEKIT_URL", "ws://localhost:7880")
    s = Settings()
    assert s.agent_name == "from-dotenv"
    assert s.livekit_url == "ws://localhost:7880"
    assert s.livekit_api_secret.get_secret_value() == "s3cret-value"


def test_secrets_are_never_printed(monkeypatch):
    monkeypatch.setenv("LIVEKIT_API_SECRET", "s3cret-value")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    s = Settings()
    for text in (str(s), repr(s), s.model_dump_json()):
        assert "s3cret-value" not in text and "sk-very-secret" not in text


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("LOAD_THRESHOLD", "1.5")
    with pytest.raises(ValidationError, match="load_threshold"):
        Settings()
    monkeypatch.setenv("LOAD_THRESHOLD", "0.5")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()


def _json_lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.strip()]


def test_json_logs_carry_bound_context_for_ours_and_stdlib():
    buf = io.StringIO()
    configure_logging("json", "INFO", stream=buf)
    try:
        bind_context(room="room-1", job_id="AJ_1", persona="tim")
        get_logger("workers.test").info("cast_started", personas=2)
        logging.getLogger("livekit.agents").warning("from livekit")
        events = _json_lines(buf)
        assert [e["event"] for e in events] == ["cast_started", "from livekit"]
        for e in events:
            assert (e["room"], e["job_id"], e["persona"]) == ("room-1", "AJ_1", "tim")
        assert events[0]["personas"] == 2 and events[1]["level"] == "warning"
    finally:
        clear_context()
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def test_console_logs_are_readable():
    buf = io.StringIO()
    configure_logging("console", "INFO", stream=buf)
    try:
        bind_context(room="room-2")
        get_logger("x").info("hello")
        line = buf.getvalue()
        assert "hello" in line and "room=room-2" in line and not line.lstrip().startswith("{")
    finally:
        clear_context()
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
