"""`python -m workers.dispatch SCENARIO --identity HUMAN [--room NAME] [--name NAME] [--json]`
`python -m workers.dispatch SCENARIO --call +15550100777 [--room NAME] [--json]`

Checks the scenario against the catalog, then (through livekit-api) creates the room, its
metadata naming the scenario, and an explicit dispatch of AGENT_NAME carrying the scenario, and
prints the room, the server URL and a one-hour join token for the human. With `--call`, the room
phones that number (the scenario's `dial`, on its tenant's outbound trunk) and no token is made.
Exit 0 done, 2 bad input or missing settings (before any network call), 1 server/API error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from livekit import api

from config.catalog import Catalog
from config.scenario import Dial, Scenario
from config.settings import LiveKitCredentials, Settings
from config.telephony import E164_PATTERN as E164
from workers.cli_input import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    SCENARIO_HELP,
    BadInput,
    ScenarioInput,
    load_scenario_input,
    read_settings,
)
from workers.job.plan import MAX_METADATA_BYTES
from workers.tokens import (
    HUMAN_TOKEN_TTL,
    check_human_identity,
    mint_human_token,
    quiet_dev_key_warning,
)

EXIT_API = 1
PROG = "workers.dispatch"
MAX_ROOM_NAME = 128
API_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Request:
    scenario: Scenario
    metadata: str  # the dispatch's: {"scenario": NAME}, or the inline scenario
    room: str
    identity: str
    name: str
    livekit: LiveKitCredentials


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {PROG}",
        description="Create a room for SCENARIO, dispatch the multi-persona agent to it, and "
        "print a join token for a human.",
        epilog="Exit status: 0 done, 2 bad input or settings, 1 LiveKit server/API error.",
    )
    parser.add_argument("scenario", help=SCENARIO_HELP)
    parser.add_argument("--identity", help="the human's participant identity (required)")
    parser.add_argument("--name", help="the human's display name (default: the identity)")
    parser.add_argument("--room", help="room name (default: <scenario>-<random>)")
    parser.add_argument(
        "--call",
        metavar="NUMBER",
        help="the room phones NUMBER (E.164) on the tenant's outbound trunk; no join token",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def with_call(loaded: ScenarioInput, number: str) -> ScenarioInput:
    """The scenario with its `dial` set to phone `number` (sent inline: the worker cannot
    know the number otherwise)."""
    if not E164.fullmatch(number):
        raise BadInput(f"--call {number!r} is not an E.164 number (write it as +15550100777)")
    scenario = loaded.scenario
    dial = (scenario.dial or Dial()).model_copy(update={"number": number})
    return ScenarioInput(loaded.catalog, scenario.model_copy(update={"dial": dial}), None)


def dispatch_metadata(loaded: ScenarioInput, scenarios_dir: Path) -> str:
    """A scenario from SCENARIOS_DIR travels by name (the worker resolves names there); any
    other file, or inline JSON, travels inline, since the worker cannot read it."""
    scenario, path = loaded.scenario, loaded.path
    if path is not None and path.parent == scenarios_dir.resolve() and path.stem == scenario.name:
        return json.dumps({"scenario": scenario.name})
    text = scenario.model_dump_json(exclude_defaults=True)
    if len(text.encode()) > MAX_METADATA_BYTES:
        raise BadInput(
            f"scenario {scenario.name!r} is {len(text.encode())} bytes inline, over the "
            f"{MAX_METADATA_BYTES}-byte dispatch limit: put it in SCENARIOS_DIR and use its name",
            "bad_scenario",
        )
    return text


def prepare(args: argparse.Namespace, settings: Settings) -> Request:
    """Everything local, in order: scenario, identity, room, settings. Raises BadInput; no
    network."""
    return prepare_request(
        settings,
        scenario=args.scenario,
        identity=args.identity,
        name=args.name,
        room=args.room,
        call=args.call,
    )


def check_not_a_persona_name(name: str, catalog: Catalog) -> None:
    """A human shown under a persona's name would be taken for that persona."""
    taken = {p.name.casefold() for p in catalog.personas}
    if name.casefold() in taken:
        raise BadInput(
            f"--name {name!r} is a persona's name in the catalog: choose another display name",
            "bad_identity",
        )


def check_room_name(room: str) -> str:
    room = room.strip()
    if not room or len(room) > MAX_ROOM_NAME:
        raise BadInput(f"--room must be 1 to {MAX_ROOM_NAME} characters", "bad_room")
    return room


def prepare_request(
    settings: Settings,
    *,
    scenario: str,
    identity: str | None,
    name: str | None = None,
    room: str | None = None,
    call: str | None = None,
    allow_outside: bool = True,
) -> Request:
    """`prepare` for any caller (the command line, the rooms API with `allow_outside=False`):
    the same checks in the same order, the same BadInput. With `call`, the room phones that
    number and needs no human with a token."""
    loaded = load_scenario_input(scenario, settings, allow_outside=allow_outside)
    if call is not None:
        loaded = with_call(loaded, call)
    metadata = dispatch_metadata(loaded, settings.scenarios_dir)
    try:
        calling_only = call is not None and not identity
        identity = "" if calling_only else check_human_identity(identity or "")
    except ValueError as e:
        raise BadInput(str(e), "bad_identity") from None
    name = (name or identity).strip() or identity
    check_not_a_persona_name(name, loaded.catalog)
    room = check_room_name(room or f"{loaded.scenario.name}-{secrets.token_hex(3)}")
    livekit = settings.livekit_credentials()
    if livekit is None:
        missing = ", ".join(settings.livekit_missing())
        raise BadInput(f"set {missing} (in the environment or .env) to dispatch", "not_configured")
    return Request(
        scenario=loaded.scenario,
        metadata=metadata,
        room=room,
        identity=identity,
        name=name,
        livekit=livekit,
    )


async def create(req: Request, agent_name: str) -> str:
    """Create the room and the dispatch; returns the dispatch id."""
    timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_S)
    livekit = req.livekit
    async with api.LiveKitAPI(
        livekit.url, livekit.api_key, livekit.api_secret.get_secret_value(), timeout=timeout
    ) as lk:
        await lk.room.create_room(
            api.CreateRoomRequest(
                name=req.room, metadata=json.dumps({"scenario": req.scenario.name})
            )
        )
        dispatch = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(
                agent_name=agent_name, room=req.room, metadata=req.metadata
            )
        )
    return dispatch.id


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    print(f"room:      {result['room']}")
    print(f"server:    {result['url']}")
    print(f"agent:     {result['agent_name']} (dispatch {result['dispatch_id']})")
    print(f"scenario:  {result['scenario']}")
    if "calling" in result:
        print(f"calling:   {result['calling']}")
    if "token" in result:
        print(f"identity:  {result['identity']} (token valid until {result['expires_at']})")
        print(f"token:     {result['token']}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = read_settings()
        req = prepare(args, settings)
        quiet_dev_key_warning(req.livekit)
    except BadInput as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        dispatch_id = asyncio.run(create(req, settings.agent_name))
    except api.ServerError as e:
        print(f"{PROG}: the LiveKit server refused: {e.code}: {e.message}", file=sys.stderr)
        return EXIT_API
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        where = req.livekit.url
        print(f"{PROG}: cannot reach the LiveKit server at {where}: {e!r}", file=sys.stderr)
        return EXIT_API
    result = {
        "room": req.room,
        "url": req.livekit.url,
        "agent_name": settings.agent_name,
        "dispatch_id": dispatch_id,
        "scenario": req.scenario.name,
    }
    if req.scenario.dial is not None and req.scenario.dial.number:
        result["calling"] = req.scenario.dial.number
    if req.identity:
        result["identity"] = req.identity
        result["token"] = mint_human_token(
            api_key=req.livekit.api_key,
            api_secret=req.livekit.api_secret.get_secret_value(),
            room=req.room,
            identity=req.identity,
            name=req.name,
        )
        expires = datetime.now(UTC) + HUMAN_TOKEN_TTL
        result["expires_at"] = expires.isoformat(timespec="seconds")
    _print(result, args.json)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
