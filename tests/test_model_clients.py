"""The HTTP clients of a room's OpenAI plugins: one per server and key for the whole room,
reused connection by connection, and closed when the room ends; the TLS settings made once."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from aiohttp import web
from livekit.plugins import openai
from pydantic import SecretStr

from agents.endpoints import Endpoint, ModelClients
from agents.retry_after import tls_context
from config.scenario import load_scenario
from config.settings import Settings
from workers.openai_server import OpenAIServer
from workers.openai_server.rooms import KEY_ENV, run_served_room, served_catalog

TIMEOUT_S = 90


def _connections(server: OpenAIServer, monkeypatch) -> Counter[tuple[str, object]]:
    """(route, client address) -> requests: each address is one TCP connection."""
    seen: Counter[tuple[str, object]] = Counter()
    admit = server.admit

    async def counting(request: web.Request, route: str) -> str | web.StreamResponse:
        seen[(route, request.transport.get_extra_info("peername"))] += 1  # type: ignore[union-attr]
        return await admit(request, route)

    monkeypatch.setattr(server, "admit", counting)
    return seen


def _endpoint(server: OpenAIServer, persona: str = "tim") -> Endpoint:
    return Endpoint(SecretStr(server.key), KEY_ENV, server.base_url(persona))


def test_one_client_per_server_and_key_in_a_room() -> None:
    clients = ModelClients()
    a = Endpoint(SecretStr("k"), "A_KEY", "http://127.0.0.1:1/tim/v1")
    same = Endpoint(SecretStr("k"), "A_KEY", "http://127.0.0.1:1/tim/v1")
    other = Endpoint(SecretStr("k"), "A_KEY", "http://127.0.0.1:1/chris/v1")
    assert clients.client(a) is clients.client(same)
    assert clients.client(a) is not clients.client(other)
    assert len(clients.all()) == 2


def test_tls_settings_are_made_once_per_process() -> None:
    # a new context loads the system's CA certificates again: tens of ms on the event loop
    assert tls_context() is tls_context()
    e = Endpoint(SecretStr("k"), "A_KEY", "https://models.example/v1")
    first, second = e.new_client(), e.new_client()
    pools = [c._client._transport._inner._pool for c in (first, second)]  # httpx internals
    assert pools[0]._ssl_context is pools[1]._ssl_context is tls_context()


async def test_closed_clients_are_not_handed_out_again() -> None:
    clients = ModelClients()
    client = clients.client(Endpoint(SecretStr("k"), "A_KEY", "http://127.0.0.1:1/v1"))
    await clients.aclose()
    await clients.aclose()  # idempotent
    assert client.is_closed()
    with pytest.raises(RuntimeError, match="closed"):
        clients.client(Endpoint(SecretStr("k"), "A_KEY", "http://127.0.0.1:1/v1"))


@pytest.mark.integration
async def test_speech_requests_of_a_persona_reuse_one_connection(
    openai_server, monkeypatch
) -> None:
    """A TTS request reads its stream to the end, so its keep-alive connection serves the next
    sentence: no new connection (on a real server, a new TLS handshake) per sentence."""
    seen = _connections(openai_server, monkeypatch)
    clients = ModelClients()
    tts = openai.TTS(
        voice="alloy", response_format="pcm", **_endpoint(openai_server).client_kwargs(clients)
    )
    try:
        for text in ("Tim here.", "What is your location?", "Thanks, drive safe."):
            async with asyncio.timeout(30), tts.synthesize(text) as stream:
                frames = [ev async for ev in stream]
            assert frames
    finally:
        await clients.aclose()
    assert sum(seen.values()) == 3
    assert len(seen) == 1


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["pipeline"])
async def test_a_room_closes_its_model_clients_when_it_ends(
    mode, openai_server, catalog, catalog_data, scenarios_dir, tmp_path, monkeypatch
) -> None:
    seen = _connections(openai_server, monkeypatch)
    scenario = load_scenario("dispatch_checkin", scenarios_dir=scenarios_dir)
    served = served_catalog(catalog_data, openai_server, {"tim": mode, "chris": mode})
    clients = ModelClients()
    async with asyncio.timeout(TIMEOUT_S):
        result, _, _ = await run_served_room(
            served, scenario, Settings(_env_file=None), tmp_path, clients=clients
        )
    assert result.reason == "end_conversation"
    assert clients.closed
    assert len(clients.all()) == 2  # one per persona: each has its own base URL here
    assert all(c.is_closed() for c in clients.all())
    # every plugin of a persona shared its one client: few connections for many requests
    requests = sum(seen.values())
    assert requests >= 10
    assert len(seen) <= 6, seen
