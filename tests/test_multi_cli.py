"""`workers.multi`: clear messages instead of tracebacks when LiveKit is not set, through
main(argv) in-process; one test runs `python -m workers.multi` as a program."""

from __future__ import annotations

import os

import pytest

from config.settings import Settings
from workers import multi
from workers.multi import export_livekit_env, missing_livekit

LIVEKIT_VARS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
DEV_MESSAGE = (
    "workers.multi: set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET "
    "(in the environment or .env) to run `dev`"
)


@pytest.mark.subprocess(argv=["-m", "workers.multi", "dev"])  # in a directory with no .env
def test_runs_as_a_program_and_exits_with_mains_status(program):
    assert program.returncode == 2
    assert program.stderr.strip().splitlines() == [DEV_MESSAGE]
    assert "Traceback" not in program.stdout + program.stderr


@pytest.fixture
def no_livekit_env(monkeypatch, tmp_path):
    for name in LIVEKIT_VARS:
        monkeypatch.setenv(name, "placeholder")  # so teardown also removes what a test sets
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_dev_without_livekit_settings_exits_with_one_clear_line(no_livekit_env, run_main):
    result = run_main(multi.main, "dev")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [DEV_MESSAGE]
    assert "Traceback" not in result.stdout + result.stderr


def test_flags_count_as_given(no_livekit_env):
    settings = Settings(_env_file=None)
    argv = ["dev", "--url=wss://x.livekit.cloud", "--api-key", "k", "--api-secret", "s"]
    assert missing_livekit(argv, settings) == []
    assert missing_livekit(["dev"], settings) == list(LIVEKIT_VARS)
    assert missing_livekit(["start", "--url", "ws://h:7880"], settings) == [
        "LIVEKIT_API_KEY",
        "LIVEKIT_API_SECRET",
    ]


def test_main_names_what_is_missing_for_each_command(no_livekit_env, capsys, monkeypatch):
    monkeypatch.setattr(multi, "get_settings", lambda: Settings(_env_file=None))
    assert multi.main(["start", "--url", "ws://h:7880"]) == 2
    assert capsys.readouterr().err.strip() == (
        "workers.multi: set LIVEKIT_API_KEY, LIVEKIT_API_SECRET (in the environment or .env) "
        "to run `start`"
    )
    assert multi.main(["connect", "--room", "r"]) == 2
    assert "to run `connect`" in capsys.readouterr().err


def test_bad_settings_are_one_line_too(no_livekit_env, capsys, monkeypatch):
    monkeypatch.setenv("LOAD_THRESHOLD", "7")
    monkeypatch.setattr(multi, "get_settings", lambda: Settings(_env_file=None))
    assert multi.main(["dev"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("workers.multi: bad settings: LOAD_THRESHOLD:") and "\n" not in err


def test_dotenv_values_reach_the_livekit_cli(no_livekit_env, tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(
        "LIVEKIT_URL=ws://from-dotenv:7880\nLIVEKIT_API_KEY=key\nLIVEKIT_API_SECRET=secret\n"
    )
    monkeypatch.setenv("LIVEKIT_API_KEY", "from-env")  # the environment wins over .env
    settings = Settings()
    assert missing_livekit(["start"], settings) == []
    export_livekit_env(settings)
    assert os.environ["LIVEKIT_URL"] == "ws://from-dotenv:7880"
    assert os.environ["LIVEKIT_API_KEY"] == "from-env"
    assert os.environ["LIVEKIT_API_SECRET"] == "secret"
