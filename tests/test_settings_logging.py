"""Settings from env and .env; secrets never shown; logging binds context on every event."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from pydantic import ValidationError

from config.logging import bind_context, clear_context, configure_logging, get_logger
from config.settings import Settings, describe_settings_error

# tests/conftest.py removes every setting from the environment and runs each test in its
# own empty directory, so Settings() sees no stray .env.


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
    secret = s.livekit_api_secret
    assert secret is not None and secret.get_secret_value() == "s3cret-value"


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


def test_an_empty_value_is_no_value_from_every_source(monkeypatch, tmp_path):
    env = tmp_path / ".env"
    env.write_text(
        "OPENAI_API_KEY=\nLIVEKIT_API_SECRET=  \nAGENT_NAME=\nLOAD_THRESHOLD=\n"
        "WORKER_HTTP_PORT=\nCATALOG_PATH=\n"
    )
    monkeypatch.setenv("LIVEKIT_API_KEY", "")
    s = Settings(_env_file=env)
    assert s.openai_key() is None and s.openai_api_key is None
    assert s.livekit_missing() == ["LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"]
    assert s.agent_name == "multi-persona" and s.load_threshold == 0.9
    assert s.worker_http_port is None and s.catalog_path.name == "catalog.json"
    monkeypatch.setenv("OPENAI_API_KEY", " ")
    assert Settings(_env_file=env).openai_key() is None
    assert Settings(_env_file=None, openai_api_key="").openai_key() is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-set")  # a value still counts
    key = Settings(_env_file=env).openai_key()
    assert key is not None and key.get_secret_value() == "sk-set"


def test_a_settings_error_names_each_variable_and_the_fix_never_the_value(monkeypatch):
    monkeypatch.setenv("LOAD_THRESHOLD", "sk-pasted-here-0001")
    monkeypatch.setenv("STATS_PORT", "9" * 5000)  # too long for an int
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None)
    assert "sk-pasted-here-0001" in str(info.value)  # pydantic's own message echoes it
    text = describe_settings_error(info.value)
    assert "\n" not in text and "sk-pasted-here-0001" not in text and "9999" not in text
    assert text.startswith("LOAD_THRESHOLD: input should be a valid number")
    assert "; STATS_PORT: " in text
    assert text.endswith(
        "(fix them in the environment or .env, or unset them for the default; "
        ".env.example lists every setting)"
    )


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


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_without_tracebacks_a_chained_exception_is_one_line(fmt):
    """21.5: what livekit logs with exc_info (a chain of causes) is one line, type and message."""
    buf = io.StringIO()
    configure_logging(fmt, "ERROR", stream=buf, tracebacks=False)
    try:
        try:
            try:
                raise ConnectionError("All connection attempts failed")
            except ConnectionError as cause:
                raise RuntimeError("failed after 4 attempts\n(see above)") from cause
        except RuntimeError as e:
            logging.getLogger("livekit.agents").error("Error in _llm_inference_task", exc_info=e)
            get_logger("workers.x").exception("ours_failed")
        lines = buf.getvalue().splitlines()
        assert len(lines) == 2, lines
        assert all("RuntimeError: failed after 4 attempts (see above)" in line for line in lines)
        assert "Traceback" not in buf.getvalue()
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
