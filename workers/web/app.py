"""The aiohttp application: the page and `/api/v1/`.

    GET    /                          the page (static/index.html)
    GET    /api/v1/scenarios          the scenarios in SCENARIOS_DIR: name, campaign, roles
    POST   /api/v1/rooms/create       {"scenario": NAME | {...}, "identity", "name"?, "room"?}
    POST   /api/v1/rooms/{name}/join  {"identity", "name"?}: a token for a room that exists
    GET    /api/v1/rooms/{name}       who is in it
    DELETE /api/v1/rooms/{name}       end it

With WEB_API_KEY set, every /api/ call needs it (`Authorization: Bearer KEY` or `X-Api-Key`);
without it the server refuses to bind anything but loopback (`__main__`). Bodies are limited to
MAX_BODY_BYTES; every error is `problems`' JSON.
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from livekit import api

from config.logging import get_logger
from config.scenario import load_scenario
from config.settings import Settings
from workers.cli_input import BadInput
from workers.dispatch import create, prepare_request
from workers.job.plan import MAX_METADATA_BYTES
from workers.tokens import HUMAN_TOKEN_TTL, check_human_identity, mint_human_token
from workers.web import problems, rooms

log = get_logger("workers.web")

STATIC = Path(__file__).parent / "static"
# An inline scenario may be MAX_METADATA_BYTES once dispatched; its JSON in a request body,
# indented and with the other fields, fits in twice that.
MAX_BODY_BYTES = 2 * MAX_METADATA_BYTES
CREATE_FIELDS = {"scenario", "identity", "name", "room"}
JOIN_FIELDS = {"identity", "name"}

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)


def _key_ok(request: web.Request, key: str) -> bool:
    given = request.headers.get("X-Api-Key", "")
    auth = request.headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth.removeprefix("Bearer ")
    return hmac.compare_digest(given.encode(), key.encode())


@web.middleware
async def _guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Key, body size, and JSON for every error: no traceback, no aiohttp HTML page."""
    try:
        if request.path.startswith("/api/"):
            key = request.app[SETTINGS].web_api_key
            if key is not None and not _key_ok(request, key.get_secret_value()):
                return problems.problem(
                    401, "unauthorized", "a valid API key is required (WEB_API_KEY)"
                )
            if (request.content_length or 0) > MAX_BODY_BYTES:
                return _too_large()
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return _too_large()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status, "bad_request")
        return problems.problem(e.status, code, e.reason)
    except Exception as e:  # never a traceback to the client; the log has it
        log.exception("web_request_failed", path=request.path, error=type(e).__name__)
        return problems.problem(500, "internal_error", "the server failed; see its log")


def _too_large() -> web.Response:
    return problems.problem(
        413, "body_too_large", f"the request body is over {MAX_BODY_BYTES} bytes"
    )


async def _body(request: web.Request, allowed: set[str]) -> dict[str, Any] | web.Response:
    try:
        data = await request.json()
    except (ValueError, UnicodeDecodeError):
        return problems.bad_request("$", "the body must be a JSON object")
    if not isinstance(data, dict):
        return problems.bad_request("$", "the body must be a JSON object")
    for field in sorted(set(data) - allowed):
        return problems.bad_request(f"$.{field}", "unknown field: remove it")
    for field in sorted(allowed - {"scenario"}):
        if field in data and not isinstance(data[field], str):
            return problems.bad_request(f"$.{field}", "must be a string")
    return data


def _livekit_error(e: Exception, settings: Settings) -> web.Response:
    if isinstance(e, api.TwirpError):
        return problems.problem(
            502,
            "livekit_refused",
            f"the LiveKit server refused: {e.code}: {e.message}",
            exit_status=problems.EXIT_API,
        )
    return problems.problem(
        502,
        "livekit_unreachable",
        f"cannot reach the LiveKit server at {_server_url(settings)}: {type(e).__name__}",
        exit_status=problems.EXIT_API,
    )


LIVEKIT_ERRORS = (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError)


def _server_url(settings: Settings) -> str:
    credentials = settings.livekit_credentials()
    return credentials.url if credentials is not None else ""


def _joined(settings: Settings, room: str, identity: str, name: str) -> dict[str, Any]:
    livekit = settings.livekit_credentials()
    assert livekit is not None  # the app refuses to start without them
    token = mint_human_token(
        api_key=livekit.api_key,
        api_secret=livekit.api_secret.get_secret_value(),
        room=room,
        identity=identity,
        name=name,
    )
    expires = datetime.now(UTC) + HUMAN_TOKEN_TTL
    return {
        "room": room,
        "url": livekit.url,
        "identity": identity,
        "name": name,
        "token": token,
        "expires_at": expires.isoformat(timespec="seconds"),
    }


async def create_room(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await _body(request, CREATE_FIELDS)
    if isinstance(body, web.Response):
        return body
    scenario = body.get("scenario")
    if isinstance(scenario, dict):
        scenario = json.dumps(scenario)
    elif not isinstance(scenario, str) or not scenario.strip() or scenario.lstrip()[:1] == "{":
        return problems.bad_request(
            "$.scenario", "must be a scenario name in SCENARIOS_DIR or a scenario object"
        )
    try:
        req = prepare_request(
            settings,
            scenario=scenario,
            identity=body.get("identity"),
            name=body.get("name"),
            room=body.get("room"),
            allow_outside=False,  # a remote caller names scenarios only inside SCENARIOS_DIR
        )
    except BadInput as e:
        return problems.bad_input(e)
    try:
        dispatch_id = await create(req, settings.agent_name)
    except LIVEKIT_ERRORS as e:
        return _livekit_error(e, settings)
    log.info("web_room_created", room=req.room, scenario=req.scenario.name, identity=req.identity)
    answer = _joined(settings, req.room, req.identity, req.name)
    answer.update(scenario=req.scenario.name, dispatch_id=dispatch_id)
    return web.json_response(answer, status=201)


async def join_room(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await _body(request, JOIN_FIELDS)
    if isinstance(body, web.Response):
        return body
    # the same checks as create's, with no scenario to load
    try:
        identity = check_human_identity(body.get("identity") or "")
    except ValueError as e:
        return problems.bad_input(BadInput(str(e), "bad_identity"))
    name = (body.get("name") or identity).strip() or identity
    if settings.livekit_missing():
        return problems.bad_input(BadInput("the LiveKit server is not set", "not_configured"))
    try:
        await rooms.require_room(settings, request.match_info["name"])
    except rooms.NoSuchRoom:
        return _no_room(request.match_info["name"])
    except LIVEKIT_ERRORS as e:
        return _livekit_error(e, settings)
    return web.json_response(_joined(settings, request.match_info["name"], identity, name))


def _no_room(name: str) -> web.Response:
    return problems.problem(404, "not_found", f"no room {name!r} on the LiveKit server")


async def show_room(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        return web.json_response(await rooms.room_view(settings, request.match_info["name"]))
    except rooms.NoSuchRoom:
        return _no_room(request.match_info["name"])
    except LIVEKIT_ERRORS as e:
        return _livekit_error(e, settings)


async def delete_room(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    name = request.match_info["name"]
    try:
        await rooms.end_room(settings, name)
    except rooms.NoSuchRoom:
        return _no_room(name)
    except LIVEKIT_ERRORS as e:
        return _livekit_error(e, settings)
    log.info("web_room_ended", room=name)
    return web.json_response({"room": name, "ended": True})


async def list_scenarios(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    found = []
    for path in sorted(settings.scenarios_dir.glob("*.json")):
        try:
            s = load_scenario(path.stem, scenarios_dir=settings.scenarios_dir)
        except ValueError:
            continue  # a broken file is dispatch's to report, by name
        found.append(
            {"name": s.name, "campaign": s.campaign, "roles": [slot.role for slot in s.cast]}
        )
    return web.json_response({"scenarios": found})


async def index(_: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[_guard], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app.add_routes(
        [
            web.get("/", index),
            web.static("/static", STATIC, append_version=False),
            web.get("/api/v1/scenarios", list_scenarios),
            web.post("/api/v1/rooms/create", create_room),
            web.post("/api/v1/rooms/{name}/join", join_room),
            web.get("/api/v1/rooms/{name}", show_room),
            web.delete("/api/v1/rooms/{name}", delete_room),
        ]
    )
    return app
