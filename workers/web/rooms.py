"""The rooms API's calls to the LiveKit server (livekit-api): who is in a room, end a room.
Creating one is `workers.dispatch.create`, the CLI's own code."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from livekit import api

from config.settings import Settings
from workers.dispatch import API_TIMEOUT_S

AGENT_STATE = "lk.agent.state"
_KINDS = {v: k.lower() for k, v in api.ParticipantInfo.Kind.items()}


class NoSuchRoom(LookupError):
    pass


@contextlib.asynccontextmanager
async def livekit(settings: Settings) -> AsyncIterator[api.LiveKitAPI]:
    credentials = settings.livekit_credentials()
    assert credentials is not None  # the app refuses to start without them
    timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_S)
    secret = credentials.api_secret.get_secret_value()
    async with api.LiveKitAPI(credentials.url, credentials.api_key, secret, timeout=timeout) as lk:
        yield lk


async def _room(lk: api.LiveKitAPI, name: str) -> api.Room:
    found = await lk.room.list_rooms(api.ListRoomsRequest(names=[name]))
    if not found.rooms:
        raise NoSuchRoom(name)
    return found.rooms[0]


def _scenario_of(room: api.Room) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        value = json.loads(room.metadata).get("scenario")
        return value if isinstance(value, str) else None
    return None


def describe_participant(p: api.ParticipantInfo) -> dict[str, Any]:
    attrs = dict(p.attributes)
    return {
        "identity": p.identity,
        "name": p.name,
        "kind": _KINDS.get(p.kind, str(p.kind)),
        "role": attrs.get("role"),
        "persona": attrs.get("persona"),
        "state": attrs.get(AGENT_STATE),
        "tracks": [t.name for t in p.tracks],
    }


async def room_view(settings: Settings, name: str) -> dict[str, Any]:
    """The room, its scenario, and everyone in it (personas with role and state)."""
    async with livekit(settings) as lk:
        room = await _room(lk, name)
        res = await lk.room.list_participants(api.ListParticipantsRequest(room=name))
    return {
        "room": room.name,
        "scenario": _scenario_of(room),
        "participants": [describe_participant(p) for p in res.participants],
    }


async def require_room(settings: Settings, name: str) -> None:
    async with livekit(settings) as lk:
        await _room(lk, name)


async def end_room(settings: Settings, name: str) -> None:
    """Delete the room: every participant is disconnected, the personas' job ends."""
    async with livekit(settings) as lk:
        await _room(lk, name)
        await lk.room.delete_room(api.DeleteRoomRequest(room=name))
