"""The rooms API's refusals, through HTTP on loopback: every bad request is answered with the
JSON problem (code, exit status, JSON paths as `workers.dispatch` reports them) before any
call to LiveKit. LIVEKIT_URL points at a closed port, so a request that reached the network
would answer 502, not the 4xx asserted. The cases that need the server are in
tests/live/test_web.py."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from config.settings import Settings
from tests.conftest import SCENARIOS_DIR
from workers.web.__main__ import check_exposure, main, page_link
from workers.web.app import MAX_BODY_BYTES, create_app

SECRET = "a-livekit-secret-that-must-never-show-0123456789"
KEY = "web-key-for-tests"
CREATE = "/api/v1/rooms/create"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(**extra: object) -> Settings:
    values: dict[str, object] = dict(
        _env_file=None,
        scenarios_dir=SCENARIOS_DIR,
        livekit_url=f"http://127.0.0.1:{closed_port()}",
        livekit_api_key="devkey",
        livekit_api_secret=SECRET,
        web_api_key=KEY,
    )
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(settings()))) as c:
        yield c


AUTH = {"Authorization": f"Bearer {KEY}"}


async def error_of(res: ClientResponse, status: int) -> dict:
    assert res.status == status, await res.text()
    assert res.content_type == "application/json"
    text = await res.text()
    assert "Traceback" not in text and SECRET not in text and KEY not in text
    return json.loads(text)["error"]


async def test_no_key_is_refused(client: TestClient):
    res = await client.post(CREATE, json={"scenario": "dispatch_checkin", "identity": "jamie"})
    assert (await error_of(res, 401))["code"] == "unauthorized"


@pytest.mark.parametrize(
    "headers", [{"Authorization": "Bearer nope"}, {"X-Api-Key": "web-key-for-test"}]
)
async def test_wrong_key_is_refused(client: TestClient, headers: dict[str, str]):
    res = await client.get("/api/v1/rooms/any", headers=headers)
    assert (await error_of(res, 401))["code"] == "unauthorized"


async def test_the_page_needs_no_key(client: TestClient):
    res = await client.get("/")
    assert res.status == 200 and "text/html" in res.content_type


async def test_oversized_body_is_refused_before_it_is_read(client: TestClient):
    big = {"scenario": {"name": "x" * MAX_BODY_BYTES}, "identity": "jamie"}
    res = await client.post(CREATE, json=big, headers=AUTH)
    assert (await error_of(res, 413))["code"] == "body_too_large"


async def test_oversized_chunked_body_is_refused(client: TestClient):
    async def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(4):
            yield b" " * MAX_BODY_BYTES

    res = await client.post(CREATE, data=chunks(), headers=AUTH)
    assert (await error_of(res, 413))["code"] == "body_too_large"


async def test_bad_scenario_has_dispatchs_code_and_paths(client: TestClient):
    scenario = {
        "name": "bad",
        "campaign": "freight-dispatch",
        "cast": [{"role": "dispatcher", "opens": True}, {"role": "pilot"}],
    }
    res = await client.post(CREATE, json={"scenario": scenario, "identity": "j"}, headers=AUTH)
    err = await error_of(res, 400)
    assert err["code"] == "bad_scenario" and err["exit_status"] == 2
    assert [p["path"] for p in err["problems"]] == ["$.cast[1].role"]
    assert err["problems"][0]["source"] == "inline"


async def test_unknown_scenario_name(client: TestClient):
    res = await client.post(CREATE, json={"scenario": "nope", "identity": "j"}, headers=AUTH)
    err = await error_of(res, 400)
    assert err["code"] == "bad_scenario" and "no such scenario" in err["message"]


@pytest.mark.parametrize("ref", ["../config/catalog", "/etc/passwd", "scenarios/x.json"])
async def test_no_scenario_file_outside_scenarios_dir(client: TestClient, ref: str):
    res = await client.post(CREATE, json={"scenario": ref, "identity": "j"}, headers=AUTH)
    assert (await error_of(res, 400))["code"] == "bad_scenario"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"identity": "agent_dispatcher", "scenario": "dispatch_checkin"}, "$.identity"),
        ({"identity": "Agent_x", "scenario": "dispatch_checkin"}, "$.identity"),
        ({"identity": "staff_pat", "scenario": "dispatch_checkin"}, "$.identity"),
        ({"identity": "sip_+15550100", "scenario": "dispatch_checkin"}, "$.identity"),
        ({"identity": "  ", "scenario": "dispatch_checkin"}, "$.identity"),
    ],
)
async def test_imitating_identity_is_refused(client: TestClient, body: dict, path: str):
    err = await error_of(await client.post(CREATE, json=body, headers=AUTH), 400)
    assert err["code"] == "bad_identity" and err["problems"][0]["path"] == path


async def test_a_personas_display_name_is_refused(client: TestClient):
    from config.catalog import load_catalog

    persona = load_catalog(settings().catalog_path).personas[0]
    body = {"identity": "jamie", "name": persona.name.upper(), "scenario": "dispatch_checkin"}
    err = await error_of(await client.post(CREATE, json=body, headers=AUTH), 400)
    assert err["code"] == "bad_identity" and "persona's name" in err["message"]


async def test_join_refuses_imitation_too(client: TestClient):
    res = await client.post("/api/v1/rooms/r/join", json={"identity": "agent_x"}, headers=AUTH)
    assert (await error_of(res, 400))["code"] == "bad_identity"


@pytest.mark.parametrize(
    ("data", "path"),
    [
        (b"{not json", "$"),
        (b"[1, 2]", "$"),
        (b'{"scenario": "dispatch_checkin", "identity": "j", "admin": true}', "$.admin"),
        (b'{"scenario": "dispatch_checkin", "identity": 7}', "$.identity"),
        (b'{"scenario": 7, "identity": "j"}', "$.scenario"),
        (b'{"scenario": "{\\"name\\": 1}", "identity": "j"}', "$.scenario"),
    ],
)
async def test_malformed_body(client: TestClient, data: bytes, path: str):
    res = await client.post(CREATE, data=data, headers=AUTH)
    err = await error_of(res, 400)
    assert err["code"] == "bad_request" and err["problems"][0]["path"] == path


async def test_bad_room_name(client: TestClient):
    body = {"scenario": "dispatch_checkin", "identity": "j", "room": "r" * 200}
    err = await error_of(await client.post(CREATE, json=body, headers=AUTH), 400)
    assert err["code"] == "bad_room" and err["problems"][0]["path"] == "$.room"


async def test_unreachable_livekit_is_json_without_secret(client: TestClient):
    body = {"scenario": "dispatch_checkin", "identity": "jamie"}
    err = await error_of(await client.post(CREATE, json=body, headers=AUTH), 502)
    assert err["code"] == "livekit_unreachable" and err["exit_status"] == 1


async def test_unknown_route_and_method_are_json(client: TestClient):
    assert (await error_of(await client.get("/api/v1/nope", headers=AUTH), 404))["code"]
    res = await client.put(CREATE, headers=AUTH)
    assert (await error_of(res, 405))["code"] == "method_not_allowed"


async def test_livekit_not_set():
    app = create_app(settings(livekit_url=None))
    async with TestClient(TestServer(app)) as c:
        body = {"scenario": "dispatch_checkin", "identity": "jamie"}
        err = await error_of(await c.post(CREATE, json=body, headers=AUTH), 503)
    assert err["code"] == "not_configured" and "LIVEKIT_URL" in err["message"]


async def test_without_a_key_on_loopback_the_api_is_open():
    async with TestClient(TestServer(create_app(settings(web_api_key=None)))) as c:
        res = await c.get("/api/v1/scenarios")
        names = [s["name"] for s in (await res.json())["scenarios"]]
    assert "dispatch_checkin" in names


def test_no_key_means_loopback_only():
    from workers.cli_input import BadInput

    check_exposure("127.0.0.1", settings(web_api_key=None))
    check_exposure("0.0.0.0", settings())
    with pytest.raises(BadInput, match="WEB_API_KEY"):
        check_exposure("0.0.0.0", settings(web_api_key=None))


def test_serving_exposed_without_key_exits_2(monkeypatch, capsys):
    monkeypatch.setenv("WEB_HOST", "0.0.0.0")
    assert main([]) == 2
    assert "WEB_API_KEY" in capsys.readouterr().err


def test_page_link():
    assert page_link("127.0.0.1", 8090, "a b") == "http://127.0.0.1:8090/?room=a%20b"
    assert page_link("0.0.0.0", 8090, "r") == "http://127.0.0.1:8090/?room=r"
