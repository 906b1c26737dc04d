"""The rooms API against the real server: a room made through it is dispatched to the worker,
shows its personas with name, role and state, and ends when deleted."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from config.settings import PROJECT_ROOT
from tests.live.harness import PYTHON, WorkerProcess, joined, transcript_of, unique, worker_env
from tests.live.web import WebProcess, web_server

pytestmark = pytest.mark.live

KEY = "live-web-key"
AUTH = {"X-Api-Key": KEY}


@pytest.fixture(scope="module")
def web(module_tmp: Path, worker: WorkerProcess) -> Iterator[WebProcess]:
    with web_server(module_tmp, worker.agent_name, WEB_API_KEY=KEY) as server:
        yield server


async def call(method: str, url: str, **kw: Any) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.request(method, url, **kw) as res:
        return res.status, await res.json()


async def room_until(web: WebProcess, room: str, done: Any, timeout: float = 30.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            status, body = await call("GET", f"{web.url}api/v1/rooms/{room}", headers=AUTH)
            if status == 200 and done(body):
                return body
            await asyncio.sleep(0.2)


async def test_created_room_shows_its_personas_and_ends_when_deleted(
    web: WebProcess, worker: WorkerProcess
):
    room = unique("web-api")
    body = {"scenario": "dispatch_checkin", "identity": "web-jamie", "name": "Jamie", "room": room}
    status, made = await call("POST", f"{web.url}api/v1/rooms/create", json=body, headers=AUTH)
    assert status == 201, made
    assert made["room"] == room and made["url"] and made["token"]
    assert made["scenario"] == "dispatch_checkin" and made["identity"] == "web-jamie"
    accepted = await worker.wait_for("job_accepted", room=room)

    async with joined(made["token"]):
        seen = await room_until(
            web,
            room,
            lambda b: (
                len([p for p in b["participants"] if p["kind"] == "agent"]) == len(accepted["cast"])
            ),
        )
        agents = [p for p in seen["participants"] if p["kind"] == "agent"]
        assert sorted(p["role"] for p in agents) == sorted(accepted["cast"])
        assert all(p["name"] and p["identity"].startswith("agent_") for p in agents)
        human = [p for p in seen["participants"] if p["kind"] == "standard"]
        assert [(p["identity"], p["name"]) for p in human] == [("web-jamie", "Jamie")]
        assert seen["scenario"] == "dispatch_checkin"

        status, ended = await call("DELETE", f"{web.url}api/v1/rooms/{room}", headers=AUTH)
        assert status == 200 and ended == {"room": room, "ended": True}
        events = await transcript_of(worker, room, timeout=30)
        assert events[-1]["event"] == "room_ended"

    # gone from the server (a persona still joining when it was deleted may bring it back for
    # a moment, until the worker's room end disconnects it)
    gone: dict[str, Any] = {}
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(20):
            while (
                status := (got := await call("GET", f"{web.url}api/v1/rooms/{room}", headers=AUTH))[
                    0
                ]
            ) != 404:
                gone = got[1]
                await asyncio.sleep(0.2)
    assert status == 404, f"room {room} still there: {gone}"


async def test_join_link_gives_a_token_for_an_existing_room_only(web: WebProcess):
    room = unique("web-none")
    url = f"{web.url}api/v1/rooms/{room}/join"
    status, body = await call("POST", url, json={"identity": "late"}, headers=AUTH)
    assert status == 404 and body["error"]["code"] == "not_found"


async def test_refused_without_the_key_against_the_real_server(web: WebProcess):
    body = {"scenario": "dispatch_checkin", "identity": "web-jamie"}
    status, err = await call("POST", f"{web.url}api/v1/rooms/create", json=body)
    assert status == 401 and err["error"]["code"] == "unauthorized"


async def test_make_room_prints_the_pages_link_for_a_fresh_dispatched_room(
    web: WebProcess, worker: WorkerProcess, module_tmp: Path
):
    """`make room SCENARIO=...` runs `python -m workers.web room SCENARIO`."""
    room = unique("web-link")
    env = worker_env(worker.agent_name, module_tmp, WEB_PORT="8123")
    done = await asyncio.to_thread(
        subprocess.run,
        [PYTHON, "-m", "workers.web", "room", "dispatch_checkin", "--room", room],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"http://127.0.0.1:8123/?room={room}"
    await worker.wait_for("job_accepted", room=room)
    status, body = await call(
        "POST", f"{web.url}api/v1/rooms/{room}/join", json={"identity": "late"}, headers=AUTH
    )
    assert status == 200 and body["room"] == room and body["token"]
    await call("DELETE", f"{web.url}api/v1/rooms/{room}", headers=AUTH)
