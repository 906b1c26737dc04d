"""The live suite needs the private network and server of tests/live/livenet.sh (`make
test-live`, which `make test` runs). Run any other way it is skipped with one line saying why;
with CI=true a live test that cannot start is a failure, never a skip."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live.harness import IN_NETNS, URL, WorkerProcess, unique
from tests.live.phone import TelephonyStack

NOT_HERE = (
    "live suite: needs the LiveKit server of tests/live/livenet.sh; run `make test-live` "
    "(Go for `make livekit`, root for the private network namespace)"
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.live)


@pytest.fixture(scope="session", autouse=True)
def _live_server() -> None:
    if IN_NETNS and URL:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(NOT_HERE)
    pytest.skip(NOT_HERE)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("live")


@pytest.fixture(scope="module")
def worker(module_tmp: Path) -> Iterator[WorkerProcess]:
    """One worker for the module's cases (each case uses rooms of its own)."""
    proc = WorkerProcess.start(module_tmp, agent_name=unique("live"), name="worker")
    try:
        asyncio.run(proc.ready())
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Workers a case starts itself (signals, two workers); all killed at teardown."""
    started: list[WorkerProcess] = []
    yield started
    for proc in started:
        proc.kill()


@pytest.fixture(scope="session")
def telephony(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TelephonyStack]:
    """LiveKit's SIP service with a Redis-backed server of its own, started the first time a
    test asks for it; without it (no Go, no SIPp) its tests skip with one line, and with
    CI=true they fail."""
    stack = TelephonyStack.start(tmp_path_factory.mktemp("telephony"))
    if isinstance(stack, str):
        if os.environ.get("CI") == "true":
            pytest.fail(stack)
        pytest.skip(stack)
    try:
        yield stack
    finally:
        stack.stop()
