from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from config.catalog import Catalog, load_catalog
from config.logging import configure_logging
from config.settings import PROJECT_ROOT, Settings, get_settings
from tests.redis_server import (  # noqa: F401 (fixtures)
    make_selector,
    own_redis_server,
    redis_server,
    redis_url,
)

CATALOG_PATH = PROJECT_ROOT / "config" / "catalog.json"
SCENARIOS_DIR = PROJECT_ROOT / "scenarios"


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch, tmp_path):
    """No test reads the developer's settings: every setting (keys included) is removed from
    the environment unless the test sets it, each test runs in its own empty directory (so
    Settings' `.env` is the test's own, if it writes one) and get_settings() forgets what an
    earlier test read."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog(CATALOG_PATH)


@pytest.fixture
def catalog_data() -> dict:
    return json.loads(CATALOG_PATH.read_text())


@pytest.fixture
def scenarios_dir() -> Path:
    return SCENARIOS_DIR


# -- command-line tools, in-process and as programs ------------------------------------------


@dataclass(frozen=True)
class CliResult:
    """What a command-line run gave: its exit status and its two outputs."""

    returncode: int
    stdout: str
    stderr: str


def _exit_status(exc: SystemExit) -> int:
    # What the interpreter would exit with: None is 0, a message is 1 (argparse exits 2).
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


@pytest.fixture
def run_main(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run a CLI's `main(argv)` in this process, as `python -m` would: exit status (argparse's
    SystemExit included), stdout and stderr. Settings are read afresh each run, so what the
    test set with monkeypatch.setenv since the last run counts. Call it from a sync test (or
    a thread): main() may call asyncio.run."""

    def run(main: Callable[[list[str]], int], *argv: str) -> CliResult:
        get_settings.cache_clear()
        capsys.readouterr()  # only this run's output
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = _exit_status(exc)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put logging back as it was: a CLI's main() configures it for the whole process."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def events(restore_logging: None) -> Callable[[], list[str]]:
    """The names of the events logged (JSON) from now on."""
    buf = io.StringIO()
    configure_logging("json", "DEBUG", stream=buf)
    return lambda: [json.loads(line)["event"] for line in buf.getvalue().splitlines()]


async def until(check: Callable[[], bool], within_s: float = 5.0) -> None:
    """Poll `check` on the event loop until it holds; fail after `within_s` (a hang guard)."""
    async with asyncio.timeout(within_s):
        while not check():  # noqa: ASYNC110 (a condition of another process or thread)
            await asyncio.sleep(0.01)


def clean_environ() -> dict[str, str]:
    """os.environ without any of our settings or the developer's OPENAI_*/LIVEKIT_* variables
    (for a child process; the autouse fixture does the same for in-process tests)."""
    settings = {name.upper() for name in Settings.model_fields}
    return {
        k: v
        for k, v in os.environ.items()
        if k.upper() not in settings and not k.startswith(("OPENAI_", "LIVEKIT_"))
    }


def module_env(**extra: str) -> dict[str, str]:
    """The environment of a `python -m` child: clean, the project importable, `extra` added."""
    return {**clean_environ(), "PYTHONPATH": str(PROJECT_ROOT), **extra}


@pytest.fixture
def run_module(tmp_path: Path) -> Callable[..., CliResult]:
    """Run `python -m MODULE ARGS...` as a user would, now, in the test's own empty directory
    (so no developer's `.env` is read); `env` adds variables."""

    def run(module: str, *args: str, env: dict[str, str] | None = None) -> CliResult:
        proc = subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=tmp_path,
            env=module_env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=PROGRAM_TIMEOUT_S,
        )
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run


# -- programs started ahead of their tests ---------------------------------------------------
# A Python program that imports livekit costs seconds of interpreter start-up and imports.
# A test marked `@pytest.mark.subprocess(argv=[...])` has its program started as soon as the
# session's tests are collected, so that cost overlaps the in-process tests (on another
# core) instead of adding to them; the test's `program` fixture waits for it to end.

PROGRAM_TIMEOUT_S = 120  # a hang guard, not a performance check


@dataclass
class _Program:
    proc: subprocess.Popen[str]
    cwd: Path
    stdin: str | None


_PROGRAMS: dict[str, _Program] = {}


def _start_program(
    argv: list[str],
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    stdout: bool = True,
) -> _Program:
    """`python ARGV...` in an empty directory of its own (no `.env`), clean environment;
    `stdout=False`: its reader is gone before it starts writing (the pipe is closed)."""
    cwd = Path(tempfile.mkdtemp(prefix="pytest-program-"))
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=cwd,
        env=module_env(**(env or {})),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if not stdout:
        assert proc.stdout is not None
        proc.stdout.close()
    return _Program(proc, cwd, stdin)


def _program_marker(item: pytest.Item) -> pytest.Mark | None:
    marker = item.get_closest_marker("subprocess")
    return marker if marker is not None and "argv" in marker.kwargs else None


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    for item in session.items:  # what -m / -k selected
        marker = _program_marker(item)
        if marker is not None:
            _PROGRAMS[item.nodeid] = _start_program(**marker.kwargs)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A program whose test did not run (interrupted, failed first) is stopped, not left."""
    for program in _PROGRAMS.values():
        program.proc.kill()
        program.proc.communicate()
        shutil.rmtree(program.cwd, ignore_errors=True)
    _PROGRAMS.clear()


@pytest.fixture
def program(request: pytest.FixtureRequest) -> CliResult:
    """The result of this test's `@pytest.mark.subprocess(argv=[...], env=..., stdin=...,
    stdout=...)` program (started ahead, or now if it was not), once it has ended."""
    marker = _program_marker(request.node)
    assert marker is not None, "mark the test @pytest.mark.subprocess(argv=[...])"
    started = _PROGRAMS.pop(request.node.nodeid, None) or _start_program(**marker.kwargs)
    try:
        out, err = started.proc.communicate(started.stdin, timeout=PROGRAM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        started.proc.kill()
        out, err = started.proc.communicate()
        err += f"\n(killed after {PROGRAM_TIMEOUT_S} s)"
    finally:
        shutil.rmtree(started.cwd, ignore_errors=True)
    return CliResult(started.proc.returncode, out or "", err)


@pytest.fixture
async def openai_server(catalog, scenarios_dir, monkeypatch) -> AsyncIterator[Any]:
    """The local OpenAI-compatible server answering dispatch_checkin's tim and chris, its key
    in the environment the served catalog names (imported here: only these tests need it)."""
    from config.scenario import load_scenario
    from workers.openai_server import OpenAIServer
    from workers.openai_server.rooms import KEY_ENV, brains_for

    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    served = OpenAIServer(brains_for(catalog, scenario, "tim", "chris"))
    await served.start()
    monkeypatch.setenv(KEY_ENV, served.key)
    yield served
    await served.stop()
