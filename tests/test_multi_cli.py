"""`workers.multi`'s command line: clear messages instead of tracebacks when LiveKit or the
catalog is not set, and the built server handed to the livekit CLI, through main(argv)
in-process (the livekit CLI's runner stubbed); one test runs `python -m workers.multi` as a
program. The environment helpers it uses live in workers/main/livekit_check.py."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from livekit.agents import cli

from config.catalog import load_catalog
from config.settings import PROJECT_ROOT, Settings
from workers import multi
from workers.main.livekit_check import export_livekit_env, missing_livekit
from workers.main.worker_load import MultiPersonaServer

LIVEKIT_VARS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
DEV_MESSAGE = (
    "workers.multi: set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET "
    "(in the environment or .env) to run `dev`"
)


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


@pytest.fixture
def livekit_cli(monkeypatch) -> list[tuple[Any, list[str]]]:
    """Stands in for the livekit CLI's runner (not our code): what main() handed it, and
    the argv (typer parses sys.argv) it would have parsed."""
    runs: list[tuple[Any, list[str]]] = []
    monkeypatch.setattr(sys, "argv", ["workers.multi"])  # main() sets it; teardown restores
    monkeypatch.setattr(cli, "run_app", lambda server: runs.append((server, list(sys.argv))))
    return runs


def test_main_hands_the_built_server_to_the_livekit_cli(no_livekit_env, livekit_cli, run_main):
    # a command that needs no LiveKit server, so no credentials are checked
    result = run_main(multi.main, "download-files")
    assert (result.returncode, result.stderr) == (0, "")
    ((server, argv),) = livekit_cli
    assert argv == ["workers.multi", "download-files"]
    assert isinstance(server, MultiPersonaServer)
    assert server.setup_fnc is multi.prewarm
    assert server.load_fnc == server.worker.load  # the worker's own load, capacity included
    assert server.worker.settings.agent_name == "multi-persona"


def test_main_passes_dotenv_livekit_values_to_the_cli(
    no_livekit_env, livekit_cli, tmp_path, run_main
):
    (tmp_path / ".env").write_text(
        "LIVEKIT_URL=ws://from-dotenv:7880\nLIVEKIT_API_KEY=key\nLIVEKIT_API_SECRET=secret\n"
    )
    assert run_main(multi.main, "download-files").returncode == 0
    assert os.environ["LIVEKIT_URL"] == "ws://from-dotenv:7880"
    assert os.environ["LIVEKIT_API_SECRET"] == "secret"


def test_a_bad_catalog_is_one_line_naming_the_file(
    no_livekit_env, livekit_cli, tmp_path, monkeypatch, run_main
):
    bad = tmp_path / "catalog.json"
    bad.write_text("{not json")
    monkeypatch.setenv("CATALOG_PATH", str(bad))
    result = run_main(multi.main, "download-files")
    assert result.returncode == 2 and livekit_cli == []
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("workers.multi: ") and str(bad) in line


# A LiveKit that never answers: port 9 (discard) is closed on loopback. livekit-agents retries
# WORKER_CONNECT_RETRIES times, then its CLI logs "worker failed" and used to exit 0 (issue 21).
UNREACHABLE = {
    "LIVEKIT_URL": "ws://127.0.0.1:9",
    "LIVEKIT_API_KEY": "devkey",
    "LIVEKIT_API_SECRET": "not-a-real-secret-0123456789",
    "WORKER_CONNECT_RETRIES": "1",
    "STATS_PORT": "0",
    "WORKER_HTTP_PORT": "0",
    "LOG_FORMAT": "json",
}


@pytest.mark.integration  # a whole worker: its forkserver and job processes start and stop
@pytest.mark.subprocess(argv=["-m", "workers.multi", "start"], env=UNREACHABLE)
def test_start_exits_non_zero_when_livekit_gives_up_connecting(program):
    assert program.returncode == multi.EXIT_WORKER_FAILED != 0
    last = program.stderr.strip().splitlines()[-1]
    assert last.startswith("workers.multi: the worker stopped: failed to connect to livekit")
    assert UNREACHABLE["LIVEKIT_API_SECRET"] not in program.stdout + program.stderr


# Last in the file: the program started at collection, so its start-up overlaps the tests above.
@pytest.mark.subprocess(argv=["-m", "workers.multi", "dev"])  # in a directory with no .env
def test_runs_as_a_program_and_exits_with_mains_status(program):
    assert program.returncode == 2
    assert program.stderr.strip().splitlines() == [DEV_MESSAGE]
    assert "Traceback" not in program.stdout + program.stderr


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret-XYZZY@host/0?bogus=1",
        "redis://:s3cret-XYZZY@host:70000/0",
        "redis://:s3cret-XYZZY@host/notadb",
    ],
)
def test_a_bad_capacity_url_stops_the_worker_with_one_line_and_no_password(
    no_livekit_env, capsys, monkeypatch, url
):
    """21.5: checked whole at start, not on every call once rooms come."""
    monkeypatch.setenv("CAPACITY_URL", url)
    monkeypatch.setattr(multi, "get_settings", lambda: Settings(_env_file=None))
    assert multi.main(["dev"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("workers.multi: bad settings: CAPACITY_URL:") and "\n" not in err
    assert "XYZZY" not in err and "Traceback" not in err


def test_job_processes_preload_what_the_worker_imports_but_not_its_main_module():
    """Each job process runs the worker's main module again as `__mp_main__`; preloaded in the
    forkserver it would already be imported, and runpy warns in every job process."""
    import subprocess

    assert "workers.multi" not in multi.JOB_PRELOAD
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        f"for name in {list(multi.JOB_PRELOAD)!r}: __import__(name)\n"
        "assert 'workers.multi' not in sys.modules, 'a preloaded module imports workers.multi'\n"
        "import runpy\n"
        "runpy.run_module('workers.multi', run_name='__mp_main__', alter_sys=True)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "RuntimeWarning" not in done.stderr


def test_the_main_process_loads_no_model_and_job_processes_get_them_preloaded():
    """The worker's main process runs no model: importing the worker loads no model plugin
    (silero's onnxruntime, openai's plugin: ~40 MB PSS), no offline voice; the forkserver
    preloads them for the job processes, where livekit lets them register."""
    import subprocess

    heavy = ("livekit.plugins", "onnxruntime", "pocketsphinx", "agents.models", "agents.offline")
    code = (
        f"import sys, workers.multi\nprint([m for m in sys.modules if m.startswith({heavy!r})])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert {"agents.models", "agents.offline", "workers.job.runner"} <= set(multi.JOB_PRELOAD)


def test_the_prewarmed_pool_is_one_process_unless_idle_processes_says_otherwise(
    no_livekit_env, monkeypatch
):
    """IDLE_PROCESSES sizes livekit's pool of prewarmed job processes: one by default, not
    livekit's one per core (`start`; `dev` keeps none whatever it says)."""
    from livekit.agents.worker import ServerEnvOption

    given: dict[str, Any] = {}

    class Recorded(MultiPersonaServer):
        def __init__(self, worker: Any, **kwargs: Any) -> None:
            given.clear()
            given.update(kwargs)
            super().__init__(worker, **kwargs)

    monkeypatch.setattr(multi, "MultiPersonaServer", Recorded)
    for env, start in ((None, 1), ("3", 3), ("0", 0)):
        if env is None:
            monkeypatch.delenv("IDLE_PROCESSES", raising=False)
        else:
            monkeypatch.setenv("IDLE_PROCESSES", env)
        settings = Settings()
        multi.build_server(settings, load_catalog(settings.catalog_path))
        option = given["num_idle_processes"]
        assert ServerEnvOption.getvalue(option, False) == start  # start
        assert ServerEnvOption.getvalue(option, True) == 0  # dev


def test_the_dev_key_alone_signs_without_pyjwts_short_key_warning():
    import warnings

    from pydantic import SecretStr

    from config.settings import LiveKitCredentials
    from workers.tokens import mint_human_token, quiet_dev_key_warning

    def warned(key: str, secret: str) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_dev_key_warning(LiveKitCredentials("ws://x", key, SecretStr(secret)))
            mint_human_token(api_key=key, api_secret=secret, room="r", identity="h", name="h")
        return [type(w.message).__name__ for w in caught]

    assert warned("devkey", "secret") == []
    assert warned("prodkey", "short") == ["InsecureKeyLengthWarning"]


def test_prewarm_starts_livekits_native_client_before_any_job():
    """The job's first connection must not pay for the FFI client starting: prewarm starts it
    (through livekit's private singleton, checked here in a fresh process)."""
    code = (
        "from livekit.rtc._ffi_client import FfiClient\n"
        "from workers.multi import start_rtc\n"
        "assert FfiClient._instance is None, 'started on import'\n"
        "start_rtc()\n"
        "assert isinstance(FfiClient._instance, FfiClient)\n"
        "print('started', flush=True)\n"
        # out without the interpreter's teardown: livekit's native library, torn down while
        # its runtime is still starting (this process ends at once), can abort with a Rust
        # panic (seen once in CI); a job process lives on after prewarm
        "import os; os._exit(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.strip() == "started", done.stderr
