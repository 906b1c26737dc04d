"""Persona tokens grant only what a persona uses: join one room as an agent, publish its voice
(source microphone) and data, set its own attributes, and subscribe only when it hears humans.
Each grant is read back from the signed JWT."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from livekit import api, rtc

from config.catalog import Catalog
from config.scenario import CastSlot
from workers.room.seat import Seat
from workers.room.stage import StageCast, StageError, StageEvents
from workers.room.stage.livekit import LiveKitStage
from workers.tokens import mint_persona_token, persona_identity

KEY, SECRET = "devkey", "devsecret-devsecret-devsecret-0123"


def _grants(token: str) -> api.VideoGrants:
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    assert claims.video is not None
    return claims.video


def _mint(catalog, **kw) -> str:
    return mint_persona_token(
        api_key=KEY,
        api_secret=SECRET,
        room="room-7",
        persona=catalog.persona("chris"),
        campaign="freight-dispatch",
        **kw,
    )


def test_a_persona_publishes_only_its_voice_and_data(catalog):
    video = _grants(_mint(catalog))
    assert video.can_publish_sources == ["microphone"]  # no camera, no screen share
    assert video.can_publish is True and video.can_publish_data is True
    # the framework sets lk.agent.state on its own participant: the server needs this grant
    assert video.can_update_own_metadata is True


def test_a_persona_joins_one_room_as_an_agent_and_nothing_more(catalog):
    claims = api.TokenVerifier(KEY, SECRET).verify(_mint(catalog))
    video = claims.video
    assert video is not None
    assert claims.kind == "agent" and video.agent is True
    assert video.room_join is True and video.room == "room-7"
    assert not any(
        (video.room_admin, video.room_create, video.room_list, video.room_record, video.hidden)
    )
    assert not video.ingress_admin and not video.can_manage_agent_session


def test_only_the_persona_that_hears_humans_may_subscribe(catalog):
    assert _grants(_mint(catalog)).can_subscribe is False  # the default
    assert _grants(_mint(catalog, subscribe=False)).can_subscribe is False
    assert _grants(_mint(catalog, subscribe=True)).can_subscribe is True


class _Room:
    name = "room-9"
    remote_participants: dict = {}

    def on(self, *_a, **_k):
        return None

    def register_text_stream_handler(self, *_a) -> None:
        return None

    def register_byte_stream_handler(self, *_a) -> None:
        return None

    async def disconnect(self) -> None:
        return None


async def test_the_livekit_stage_lets_only_its_listener_subscribe(catalog: Catalog) -> None:
    ctx = SimpleNamespace(
        room=_Room(),
        job=SimpleNamespace(room=SimpleNamespace(name="room-9")),
        add_shutdown_callback=lambda cb: None,
    )
    tokens: dict[str, api.VideoGrants] = {}

    async def connect(room: rtc.Room, url: str, token: str) -> None:
        claims = api.TokenVerifier(KEY, SECRET).verify(token)
        tokens[claims.identity] = _grants(token)
        raise ConnectionError("no server in this test")

    stage = LiveKitStage(
        ctx,  # type: ignore[arg-type]  # a stand-in JobContext: the parts the stage reads
        url="ws://x",
        api_key=KEY,
        api_secret=SECRET,
        campaign="mixed-ops",
        connect=connect,
        room_factory=_Room,  # type: ignore[arg-type]  # a stand-in rtc.Room that never connects
    )

    def seat(pid: str, role: str) -> Seat:
        return Seat(
            catalog.persona(pid), CastSlot(role=role), "test", persona_identity(pid, "room-9")
        )

    seats = [seat("tim", "dispatcher"), seat("alex", "support"), seat("maria", "driver")]
    cast = StageCast(
        seats=seats,
        agents={s.persona.id: None for s in seats},  # type: ignore[misc]  # never started
        models_for=lambda p: pytest.fail("no session expected"),
        own="tim",  # the job's own participant: no token minted
        listener="alex",
    )
    with pytest.raises(StageError):
        async with asyncio.timeout(5):
            await stage.open(cast, StageEvents.ignored())
    assert tokens["agent_alex_room-9"].can_subscribe is True
    assert tokens["agent_maria_room-9"].can_subscribe is False
    assert all(v.can_publish_sources == ["microphone"] for v in tokens.values())
