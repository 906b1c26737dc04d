"""No secret in any output: job failures in both log formats, every CLI's error paths; an
empty value is no value (issue 10, items 1, 2 and the CLI half of 4)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog
from livekit.plugins import openai
from pydantic import SecretStr

from agents.models import build_models, build_text_models
from config.catalog import Catalog
from config.logging import LogFormat, clear_context, configure_logging
from config.scenario import load_scenario
from config.settings import Settings, get_settings
from tests.conftest import SCENARIOS_DIR
from workers import dispatch, multi, plan, simulate
from workers.capacity.selector import Selector
from workers.job.plan import JobPlan
from workers.job.plan_handoff import PlanHandoff
from workers.main.admission import plan_directory
from workers.main.worker_load import Worker

MARK = "XYZZY"  # in every secret below: no output may contain it
SECRETS = {
    "LIVEKIT_API_SECRET": "lk-secret-XYZZY-1234",
    "OPENAI_API_KEY": "sk-test-XYZZY-5678",
}
FORMATS: tuple[LogFormat, ...] = ("console", "json")
LogBuffer = Callable[[LogFormat], io.StringIO]


@pytest.fixture
def secrets_set(monkeypatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "ws://127.0.0.1:1")
    monkeypatch.setenv("LIVEKIT_API_KEY", "devkey")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def log_buffer() -> Iterator[LogBuffer]:
    """configure_logging into a StringIO; restores the defaults afterwards."""

    def configure(fmt: LogFormat) -> io.StringIO:
        buf = io.StringIO()
        configure_logging(fmt, "DEBUG", stream=buf)
        return buf

    yield configure
    clear_context()
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


# -- a job that fails ------------------------------------------------------------------------


class _DroppedRoom:
    """The job's room after its connection dropped: livekit raises on the local participant."""

    name = "room-secret"

    @property
    def local_participant(self) -> object:
        raise RuntimeError("the room connection dropped")


class _JobCtx:
    """The parts of livekit's JobContext the entrypoint reads before the room runs."""

    def __init__(self, metadata: str, catalog: Catalog) -> None:
        self.job = SimpleNamespace(id="AJ_secret", room=SimpleNamespace(name="room-secret"))
        self.room = _DroppedRoom()
        self.proc = SimpleNamespace(userdata={"catalog": catalog})
        self._info = SimpleNamespace(accept_arguments=SimpleNamespace(metadata=metadata))
        self.shutdowns: list[str] = []

    async def connect(self, **_options: object) -> None:
        return None

    def add_shutdown_callback(self, callback: object) -> None:
        return None

    def shutdown(self, reason: str = "") -> None:
        self.shutdowns.append(reason)


def _plan_metadata(catalog: Catalog) -> str:
    scenario = load_scenario("dispatch_checkin", scenarios_dir=SCENARIOS_DIR)
    return JobPlan.from_cast(scenario, Selector(catalog).cast(scenario)).to_handoff()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_failing_job_logs_its_traceback_without_a_secret(
    fmt: LogFormat,
    catalog: Catalog,
    secrets_set: None,
    log_buffer: LogBuffer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    buf = log_buffer(fmt)
    ctx = _JobCtx('{"persona": "tim"}', catalog)
    # the plan as the worker's main process hands it to the job
    PlanHandoff(plan_directory(get_settings())).put("AJ_secret", _plan_metadata(catalog))
    with pytest.raises(RuntimeError, match="connection dropped") as failure:
        await multi.entrypoint(ctx)  # type: ignore[arg-type]  # _JobCtx stands in
    # what livekit's job runner does with an exception that leaves the entrypoint
    logging.getLogger("livekit.agents").error(
        "unhandled exception while running the job task", exc_info=failure.value
    )
    out = buf.getvalue() + "".join(capsys.readouterr())
    assert "unhandled exception" in out and "in run_job" in out  # the traceback is there
    assert ctx.shutdowns  # the job still ended
    assert MARK not in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_no_traceback_renders_local_variables(fmt, log_buffer):
    buf = log_buffer(fmt)

    def hand_over(api_secret: str) -> None:
        raise ConnectionError("refused")

    try:
        hand_over(SECRETS["LIVEKIT_API_SECRET"])
    except ConnectionError:
        structlog.stdlib.get_logger("workers.test").exception("join_failed")
        logging.getLogger("livekit.agents").exception("from livekit")
    out = buf.getvalue()
    assert out.count("ConnectionError: refused") == 2 and "hand_over" in out
    assert MARK not in out


# -- command-line error paths ----------------------------------------------------------------

CLIS: dict[str, tuple[Callable[[list[str]], int], list[str]]] = {
    "workers.multi": (multi.main, ["dev"]),
    "workers.plan": (plan.main, ["dispatch_checkin"]),
    "workers.dispatch": (dispatch.main, ["dispatch_checkin", "--identity", "caller-1"]),
    "workers.simulate": (simulate.main, ["dispatch_checkin"]),
}


def _prefix(prog: str) -> str:
    return "" if prog == "workers.plan" else f"{prog}: "  # plan's errors carry no prefix


def _run(prog: str, capsys, *extra: str) -> tuple[int, str, str]:
    main, argv = CLIS[prog]
    code = main([*argv, *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("variable", ["LOAD_THRESHOLD", "STATS_PORT", "LOG_LEVEL"])
@pytest.mark.parametrize("prog", list(CLIS))
def test_a_key_in_the_wrong_variable_is_named_not_printed(
    prog, variable, fmt, secrets_set, monkeypatch, capsys
):
    monkeypatch.setenv("LOG_FORMAT", fmt)
    monkeypatch.setenv(variable, SECRETS["OPENAI_API_KEY"])  # pasted into the wrong line
    code, out, err = _run(prog, capsys)
    assert code == 2
    line = err.strip()
    assert "\n" not in line and "Traceback" not in out + err
    assert line.startswith(f"{_prefix(prog)}bad settings: {variable}: ")
    assert "fix it in the environment or .env" in line
    assert MARK not in out + err


def test_plan_json_reports_bad_settings_without_the_value(secrets_set, monkeypatch, capsys):
    monkeypatch.setenv("STATS_PORT", SECRETS["LIVEKIT_API_SECRET"])
    code, out, err = _run("workers.plan", capsys, "--json")
    assert code == 2
    assert json.loads(out)["error"].startswith("bad settings: STATS_PORT: ")
    assert MARK not in out + err


def test_every_bad_setting_is_named_in_one_line(secrets_set, monkeypatch, capsys):
    monkeypatch.setenv("LOAD_THRESHOLD", SECRETS["OPENAI_API_KEY"])
    monkeypatch.setenv("LOG_FORMAT", SECRETS["LIVEKIT_API_SECRET"])
    code, _, err = _run("workers.simulate", capsys)
    assert code == 2 and "\n" not in err.strip()
    assert "LOAD_THRESHOLD: " in err and "LOG_FORMAT: input should be 'json' or 'console'" in err
    assert "fix them in the environment or .env" in err and MARK not in err


@pytest.mark.parametrize("prog", list(CLIS))
def test_a_dotenv_that_is_not_utf8_is_one_clear_line(prog, tmp_path, capsys):
    (tmp_path / ".env").write_bytes(b"OPENAI_API_KEY=sk-\xff\xfe-XYZZY\n")  # cwd is tmp_path
    code, out, err = _run(prog, capsys)
    assert code == 2 and "Traceback" not in out + err
    assert err.strip() == f"{_prefix(prog)}bad settings: .env: not UTF-8 text " + (
        "(undecodable byte at offset 18): save it as UTF-8"
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("prog", ["workers.plan", "workers.dispatch", "workers.simulate"])
def test_other_error_paths_print_no_secret(prog, fmt, secrets_set, monkeypatch, capsys):
    monkeypatch.setenv("LOG_FORMAT", fmt)
    main, argv = CLIS[prog]
    code = main(["no_such_scenario", *argv[1:]])
    out, err = capsys.readouterr()
    assert code == 2 and "no such scenario" in err
    assert MARK not in out + err


def test_multi_without_a_livekit_url_prints_no_secret(secrets_set, monkeypatch, capsys):
    monkeypatch.delenv("LIVEKIT_URL")
    code, out, err = _run("workers.multi", capsys)
    assert code == 2 and err.strip().startswith("workers.multi: set LIVEKIT_URL ")
    assert MARK not in out + err


# -- an empty value is no value --------------------------------------------------------------


def _dotenv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_an_empty_key_in_dotenv_is_no_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = _dotenv(tmp_path, "OPENAI_API_KEY=\nLIVEKIT_API_SECRET=\nLIVEKIT_API_KEY=\n")
    settings = Settings(_env_file=env)
    assert settings.openai_key() is None
    assert settings.livekit_missing() == ["LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"]


def test_simulate_with_an_empty_key_says_offline_and_runs_offline(tmp_path, capsys):
    # .env.example's line, in the working directory simulate reads its .env from
    _dotenv(tmp_path, f"OPENAI_API_KEY=\nTRANSCRIPTS_DIR={tmp_path / 'transcripts'}\n")
    assert simulate.main(["dispatch_checkin"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model: offline (no OPENAI_API_KEY set)")
    assert any(line.startswith("Tim (dispatcher): ") for line in lines)


async def test_the_worker_warns_when_the_key_is_empty(
    tmp_path: Path, catalog: Catalog, log_buffer: LogBuffer
) -> None:
    buf = log_buffer("json")
    env = _dotenv(tmp_path, "OPENAI_API_KEY=\n")
    worker = Worker(Settings(_env_file=env, stats_port=0), catalog, cpu_load=lambda: 0.0)
    worker.attach(SimpleNamespace())  # type: ignore[arg-type]  # no process pool yet
    await worker.stats_attempted.wait()
    await worker.aclose()
    events = [json.loads(line)["event"] for line in buf.getvalue().splitlines()]
    assert "openai_key_missing" in events


def test_models_get_the_plain_key_only_at_the_plugin(catalog):
    key = SecretStr(SECRETS["OPENAI_API_KEY"])  # as Settings holds it
    settings = Settings(_env_file=None, openai_api_key=key)
    realtime = build_models(catalog.persona("tim"), settings).llm
    assert isinstance(realtime, openai.realtime.RealtimeModel)
    assert realtime._opts.api_key == SECRETS["OPENAI_API_KEY"]
    text = build_text_models(catalog.persona("jordan"), settings).llm
    assert isinstance(text, openai.LLM) and text._client.api_key == SECRETS["OPENAI_API_KEY"]


def test_models_without_a_given_key_ask_settings_which_read_dotenv(tmp_path, catalog):
    tim = catalog.persona("tim")
    _dotenv(tmp_path, "OPENAI_API_KEY=\n")  # cwd is tmp_path
    with pytest.raises(ValueError, match="OPENAI_API_KEY is not set"):
        build_models(tim, Settings())
    _dotenv(tmp_path, f"OPENAI_API_KEY={SECRETS['OPENAI_API_KEY']}\n")
    realtime = build_models(tim, Settings()).llm
    assert isinstance(realtime, openai.realtime.RealtimeModel)
    assert realtime._opts.api_key == SECRETS["OPENAI_API_KEY"]


def test_settings_give_the_livekit_credentials_whole_and_the_secret_wrapped(tmp_path):
    env = _dotenv(
        tmp_path,
        f"LIVEKIT_URL=ws://lk:7880\nLIVEKIT_API_KEY=devkey\n"
        f"LIVEKIT_API_SECRET={SECRETS['LIVEKIT_API_SECRET']}\n",
    )
    livekit = Settings(_env_file=env).livekit_credentials()
    assert livekit is not None and (livekit.url, livekit.api_key) == ("ws://lk:7880", "devkey")
    assert livekit.api_secret.get_secret_value() == SECRETS["LIVEKIT_API_SECRET"]
    assert MARK not in repr(livekit) and MARK not in str(livekit)
    # the worker's command-line flags come first
    flagged = Settings(_env_file=env).livekit_credentials(url="ws://other:7880", api_secret="s2")
    assert flagged is not None and flagged.url == "ws://other:7880"
    assert (flagged.api_key, flagged.api_secret.get_secret_value()) == ("devkey", "s2")
    # one missing: none at all, and livekit_missing says which
    partial = Settings(_env_file=_dotenv(tmp_path, "LIVEKIT_URL=ws://lk:7880\n"))
    assert partial.livekit_credentials() is None
    assert partial.livekit_missing() == ["LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"]


SECRET_FIELDS = {"livekit_url", "livekit_api_key", "livekit_api_secret", "openai_api_key"}


def test_only_settings_read_the_secret_fields():
    """One path: everything else asks `livekit_credentials()`, `livekit_env()` or
    `openai_key()`, so a secret is unwrapped only where it is handed to a client."""
    import ast

    from config.settings import PROJECT_ROOT

    readers = sorted(
        f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} .{node.attr}"
        for package in ("config", "agents", "workers")
        for path in (PROJECT_ROOT / package).rglob("*.py")
        if path != PROJECT_ROOT / "config" / "settings.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr in SECRET_FIELDS
    )
    assert readers == []
