"""Participant identities and access tokens for personas and humans."""

from __future__ import annotations

import hashlib
import re
import warnings
from datetime import timedelta

from jwt.warnings import InsecureKeyLengthWarning
from livekit import api

from config.catalog import Persona
from config.settings import LiveKitCredentials

# Identities starting with this prefix belong to personas; humans may not use it.
AGENT_IDENTITY_PREFIX = "agent_"
# Nor may a human joining with a token of ours pass for staff (a human agent a persona
# transferred to) or for a phone leg (LiveKit SIP's `sip_` participants). Compared without
# case: `Agent_x` reads as a persona to a person.
RESERVED_IDENTITY_PREFIXES = {
    AGENT_IDENTITY_PREFIX: "personas",
    "staff_": "staff (human agents)",
    "sip_": "phone callers (LiveKit SIP)",
}
PERSONA_TOKEN_TTL = timedelta(minutes=10)  # only used to join; the server refreshes live sessions
HUMAN_TOKEN_TTL = timedelta(hours=1)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def persona_identity(persona_id: str, room: str, job_id: str = "") -> str:
    """`agent_<persona>_<room>`, and `_<job>` (6 hex of the job id's hash) for a worker's job:
    unique per persona, room and job (the same room dispatched twice must not have one
    persona's two participants replace each other), readable, at most 96 chars plus the
    job part.

    A long or oddly spelled room name is shortened and given a hash suffix so two rooms
    never collide."""
    clean_room = _UNSAFE.sub("-", room).strip("-") or "room"
    if len(clean_room) > 48 or clean_room != room:
        digest = hashlib.sha256(room.encode()).hexdigest()[:8]
        clean_room = f"{clean_room[:39]}-{digest}"
    job = f"_{hashlib.sha256(job_id.encode()).hexdigest()[:6]}" if job_id else ""
    return f"{AGENT_IDENTITY_PREFIX}{persona_id}_{clean_room}{job}"


def persona_attributes(persona: Persona, campaign: str) -> dict[str, str]:
    return {"role": persona.role, "persona": persona.id, "campaign": campaign}


# What a persona's participant publishes: its voice (the agents framework publishes it with
# source microphone) and data (transcriptions, RPC). Nothing else: no camera, no screen share.
PERSONA_PUBLISH_SOURCES = ("microphone",)


def persona_grants(room: str, *, subscribe: bool = False) -> api.VideoGrants:
    """Least privilege for one persona in one room.

    `can_update_own_metadata`: the framework sets the `lk.agent.state` attribute, which the
    server refuses without it. `subscribe`: only the persona that hears the humans takes
    their audio; the others hear the room through the floor's text relay."""
    return api.VideoGrants(
        room_join=True,
        room=room,
        agent=True,
        can_publish=True,
        can_publish_sources=list(PERSONA_PUBLISH_SOURCES),
        can_publish_data=True,
        can_update_own_metadata=True,
        can_subscribe=subscribe,
    )


# `livekit-server --dev`'s well-known key pair. Its 6-byte secret is short by design (a local
# server for development), so PyJWT's warning about it says nothing new.
DEV_KEY = ("devkey", "secret")


def quiet_dev_key_warning(livekit: LiveKitCredentials | None) -> None:
    """A process that signs with the dev key pair does not print PyJWT's short-secret warning
    on every token; with any other key (a real server's) a short secret keeps its warning."""
    if livekit is not None and (livekit.api_key, livekit.api_secret.get_secret_value()) == DEV_KEY:
        warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)


def mint_persona_token(
    *,
    api_key: str,
    api_secret: str,
    room: str,
    persona: Persona,
    campaign: str,
    identity: str = "",
    subscribe: bool = False,
    ttl: timedelta = PERSONA_TOKEN_TTL,
) -> str:
    """A token that lets one persona join one room, as an agent participant with `identity`
    (default: `persona_identity` for the room; see `persona_grants` for what it may do)."""
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity or persona_identity(persona.id, room))
        .with_name(persona.name)
        .with_kind("agent")
        .with_attributes(persona_attributes(persona, campaign))
        .with_grants(persona_grants(room, subscribe=subscribe))
        .with_ttl(ttl)
        .to_jwt()
    )


def check_human_identity(identity: str) -> str:
    """Refuse an empty identity or one using the persona prefix; return it stripped."""
    identity = identity.strip()
    if not identity:
        raise ValueError("a human identity is required (e.g. --identity caller-jamie)")
    for prefix, owner in RESERVED_IDENTITY_PREFIXES.items():
        if identity.casefold().startswith(prefix):
            raise ValueError(
                f"human identity {identity!r} may not start with {prefix!r}: "
                f"that prefix is reserved for {owner}"
            )
    return identity


def mint_human_token(
    *,
    api_key: str,
    api_secret: str,
    room: str,
    identity: str,
    name: str | None = None,
    ttl: timedelta = HUMAN_TOKEN_TTL,
) -> str:
    """A token for a person joining `room` (standard participant)."""
    identity = check_human_identity(identity)
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name(name or identity)
        .with_grants(
            api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
        )
        .with_ttl(ttl)
        .to_jwt()
    )
