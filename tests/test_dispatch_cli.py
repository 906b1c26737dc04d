"""`workers.dispatch` against a local server that records the Twirp calls livekit-api makes
(protobuf bodies, as the installed livekit-api sends and expects them). main(argv) runs
in-process, in a thread (it calls asyncio.run; the fake server runs on the test's loop); one
test runs `python -m workers.dispatch` as a program."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from livekit import api
from livekit.api.access_token import Claims
from livekit.protocol import models

from config.catalog import Catalog
from tests.conftest import SCENARIOS_DIR, CliResult
from tests.loopback_app import served
from workers.dispatch import main
from workers.job.plan import parse_job_metadata

KEY, SECRET = "devkey", "a-test-secret-that-is-long-enough-0123456789"
AGENT_NAME = "test-agent"
CREATE_ROOM = "/twirp/livekit.RoomService/CreateRoom"
CREATE_DISPATCH = "/twirp/livekit.AgentDispatchService/CreateDispatch"


def video_grants(claims: Claims) -> api.VideoGrants:
    assert claims.video is not None  # TokenVerifier.verify always fills it (empty if absent)
    return claims.video


@dataclass
class Call:
    path: str
    content_type: str
    grants: api.VideoGrants
    body: bytes


class FakeLiveKit:
    """Answers CreateRoom and CreateDispatch like a LiveKit server and records them."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.refuse = False
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        claims = api.TokenVerifier(KEY, SECRET).verify(token)  # signed with our key
        self.calls.append(Call(request.path, request.content_type, video_grants(claims), body))
        if self.refuse:
            return web.json_response(
                {"code": "unauthenticated", "msg": "invalid API key"}, status=401
            )
        if request.path == CREATE_ROOM:
            req = api.CreateRoomRequest.FromString(body)
            reply: Any = models.Room(sid="RM_test", name=req.name, metadata=req.metadata)
        elif request.path == CREATE_DISPATCH:
            d = api.CreateAgentDispatchRequest.FromString(body)
            reply = api.AgentDispatch(
                id="AD_test", agent_name=d.agent_name, room=d.room, metadata=d.metadata
            )
        else:
            return web.json_response({"code": "bad_route", "msg": request.path}, status=404)
        return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")

    def request(self, path: str, message_type: Any) -> Any:
        (call,) = [c for c in self.calls if c.path == path]
        return message_type.FromString(call.body)


@pytest.fixture
async def livekit() -> AsyncIterator[FakeLiveKit]:
    fake = FakeLiveKit()
    app = web.Application()
    app.router.add_post("/{tail:.*}", fake.handle)
    async with served(app) as port:
        fake.url = f"http://127.0.0.1:{port}"
        yield fake


def dispatch_env(url: str | None) -> dict[str, str]:
    env = {"AGENT_NAME": AGENT_NAME}
    if url is not None:
        env.update(LIVEKIT_URL=url, LIVEKIT_API_KEY=KEY, LIVEKIT_API_SECRET=SECRET)
    return env


RunDispatch = Callable[..., Any]


@pytest.fixture
def run_dispatch(run_main, monkeypatch) -> RunDispatch:
    """`python -m workers.dispatch ARGS...` in-process (cwd is the test's: no .env there)."""

    async def run(*args: str, url: str | None) -> tuple[int, str, str]:
        for name, value in dispatch_env(url).items():
            monkeypatch.setenv(name, value)
        async with asyncio.timeout(30):
            result = await asyncio.to_thread(run_main, main, *args)
        return result.returncode, result.stdout, result.stderr

    return run


@pytest.mark.subprocess
async def test_runs_as_a_program_and_exits_with_mains_status(
    livekit: FakeLiveKit, run_module: Callable[..., CliResult]
):
    livekit.refuse = True
    args = ("workers.dispatch", "dispatch_checkin", "--identity", "caller-jamie")
    async with asyncio.timeout(60):
        result = await asyncio.to_thread(run_module, *args, env=dispatch_env(livekit.url))
    assert result.returncode == 1, result.stderr  # a server error: main's status, exit 1
    assert result.stderr.strip() == (
        "workers.dispatch: the LiveKit server refused: unauthenticated: invalid API key"
    )
    assert [c.path for c in livekit.calls] == [CREATE_ROOM]


def check_human_token(token: str, room: str, identity: str) -> None:
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    video = video_grants(claims)
    assert claims.identity == identity and claims.kind != "agent"
    assert video.room == room and video.room_join
    assert not video.agent and not video.room_admin
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert abs(exp - time.time() - 3600) < 120  # one hour


async def test_dispatch_creates_the_room_and_the_dispatch(
    livekit: FakeLiveKit, run_dispatch: RunDispatch
):
    code, out, err = await run_dispatch(
        "dispatch_checkin",
        "--room",
        "test-room",
        "--identity",
        "caller-jamie",
        "--json",
        url=livekit.url,
    )
    assert code == 0, err
    assert [(c.path, c.content_type) for c in livekit.calls] == [
        (CREATE_ROOM, "application/protobuf"),
        (CREATE_DISPATCH, "application/protobuf"),
    ]
    room = livekit.request(CREATE_ROOM, api.CreateRoomRequest)
    assert room.name == "test-room"
    assert json.loads(room.metadata) == {"scenario": "dispatch_checkin"}
    dispatch = livekit.request(CREATE_DISPATCH, api.CreateAgentDispatchRequest)
    assert (dispatch.agent_name, dispatch.room) == (AGENT_NAME, "test-room")
    assert json.loads(dispatch.metadata) == {"scenario": "dispatch_checkin"}  # shipped: by name
    assert livekit.calls[0].grants.room_create and livekit.calls[1].grants.room_admin

    result = json.loads(out)
    assert result["room"] == "test-room" and result["url"] == livekit.url
    assert (result["agent_name"], result["dispatch_id"]) == (AGENT_NAME, "AD_test")
    assert result["identity"] == "caller-jamie"
    check_human_token(result["token"], "test-room", "caller-jamie")


async def test_a_file_outside_scenarios_travels_inline(
    livekit: FakeLiveKit, run_dispatch: RunDispatch, tmp_path: Path, catalog: Catalog
):
    data = json.loads((SCENARIOS_DIR / "dispatch_checkin.json").read_text())
    scenario_file = tmp_path / "my_checkin.json"
    scenario_file.write_text(json.dumps({**data, "name": "my_checkin"}))

    code, out, err = await run_dispatch(
        str(scenario_file), "--identity", "caller-jamie", url=livekit.url
    )
    assert code == 0, err
    room = livekit.request(CREATE_ROOM, api.CreateRoomRequest)
    assert re.fullmatch(r"my_checkin-[0-9a-f]{6}", room.name)  # default room name
    dispatch = livekit.request(CREATE_DISPATCH, api.CreateAgentDispatchRequest)
    # the worker takes this metadata as it is (it cannot read the file)
    request = parse_job_metadata(dispatch.metadata, catalog=catalog, scenarios_dir=SCENARIOS_DIR)
    assert request.scenario.name == "my_checkin" and request.source == "inline scenario"

    lines = dict(line.split(":", 1) for line in out.splitlines())
    assert lines["room"].strip() == room.name
    assert lines["server"].strip() == livekit.url
    check_human_token(lines["token"].strip(), room.name, "caller-jamie")


async def test_inline_json_travels_inline_even_under_a_shipped_name(
    livekit: FakeLiveKit, run_dispatch: RunDispatch
):
    data = json.loads((SCENARIOS_DIR / "dispatch_checkin.json").read_text())
    edited = {**data, "description": "edited on the command line"}  # not the shipped file
    code, out, err = await run_dispatch(
        json.dumps(edited), "--identity", "caller-jamie", "--json", url=livekit.url
    )
    assert code == 0, err
    dispatch = livekit.request(CREATE_DISPATCH, api.CreateAgentDispatchRequest)
    sent = json.loads(dispatch.metadata)
    assert (sent["name"], sent["description"]) == ("dispatch_checkin", edited["description"])
    assert json.loads(out)["scenario"] == "dispatch_checkin"


def _bad_campaign(tmp_path: Path) -> str:
    data = json.loads((SCENARIOS_DIR / "dispatch_checkin.json").read_text())
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**data, "campaign": "no-such-campaign"}))
    return str(path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_scenario", "--identity", "caller-jamie"], "no such scenario"),
        (["BAD_CAMPAIGN", "--identity", "caller-jamie"], "unknown campaign 'no-such-campaign'"),
        (["dispatch_checkin", "--identity", "agent_mallory"], "reserved for personas"),
        (["dispatch_checkin"], "a human identity is required"),
    ],
)
async def test_bad_input_exits_2_before_any_api_call(
    livekit: FakeLiveKit, run_dispatch: RunDispatch, tmp_path: Path, args: list[str], message: str
):
    args = [_bad_campaign(tmp_path) if a == "BAD_CAMPAIGN" else a for a in args]
    code, out, err = await run_dispatch(*args, url=livekit.url)
    assert code == 2
    assert message in err and err.startswith("workers.dispatch: ")
    assert "Traceback" not in err and out == ""
    assert livekit.calls == []


async def test_missing_livekit_settings_exit_2_with_one_line(run_dispatch: RunDispatch):
    code, _, err = await run_dispatch("dispatch_checkin", "--identity", "caller-jamie", url=None)
    assert code == 2
    assert err.strip() == (
        "workers.dispatch: set LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET "
        "(in the environment or .env) to dispatch"
    )


async def test_server_errors_exit_1_with_one_line(livekit: FakeLiveKit, run_dispatch: RunDispatch):
    livekit.refuse = True
    code, _, err = await run_dispatch(
        "dispatch_checkin", "--identity", "caller-jamie", url=livekit.url
    )
    assert code == 1
    assert err.strip() == (
        "workers.dispatch: the LiveKit server refused: unauthenticated: invalid API key"
    )

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    code, _, err = await run_dispatch("dispatch_checkin", "--identity", "caller-jamie", url=closed)
    assert code == 1
    assert err.startswith(f"workers.dispatch: cannot reach the LiveKit server at {closed}")
    assert len(err.strip().splitlines()) == 1
