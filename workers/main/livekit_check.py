"""Before the worker registers: are LiveKit's url, key and secret given, and does the server
take them?

The livekit CLI reads LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET from the environment
or its own flags only: `missing_livekit` names what neither the environment, `.env` nor a flag
gives, and `export_livekit_env` passes `.env`'s values on to the environment the CLI (and the
job processes it starts) reads.

livekit-agents retries a refused registration 16 times over about two minutes and then exits 0,
so a mistyped key or secret looked like a worker that ran and stopped. One API call up front
(list rooms, which any valid key may do) turns that into one clear line and a non-zero exit. An
unreachable server is not refused credentials: livekit's own retries stay in charge of that.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import aiohttp
from livekit import api

from config.settings import LiveKitCredentials, Settings

CHECK_TIMEOUT_S = 5.0
# The livekit CLI takes these from the environment or from its own flags.
LIVEKIT_FLAGS = {
    "LIVEKIT_URL": "--url",
    "LIVEKIT_API_KEY": "--api-key",
    "LIVEKIT_API_SECRET": "--api-secret",
}
COMMANDS_NEEDING_LIVEKIT = ("dev", "start", "connect")


def missing_livekit(argv: Sequence[str], settings: Settings) -> list[str]:
    """LiveKit settings given neither by the environment/.env nor by the CLI's flags."""
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}
    return [name for name in settings.livekit_missing() if LIVEKIT_FLAGS[name] not in given]


def export_livekit_env(settings: Settings) -> None:
    """The livekit CLI reads LIVEKIT_* from the environment only: pass on the .env values."""
    for name, value in settings.livekit_env().items():
        if not os.environ.get(name):
            os.environ[name] = value


def flag_value(argv: Sequence[str], flag: str) -> str | None:
    """`--flag VALUE` or `--flag=VALUE` from the command line, else None."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def http_url(url: str) -> str:
    """The server's API address for its WebSocket URL (ws -> http, wss -> https)."""
    if url.startswith("ws://"):
        return "http://" + url[len("ws://") :]
    if url.startswith("wss://"):
        return "https://" + url[len("wss://") :]
    return url


async def _refused(url: str, key: str, secret: str) -> str | None:
    timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S)
    try:
        async with api.LiveKitAPI(http_url(url), key, secret, timeout=timeout) as lk:
            await lk.room.list_rooms(api.ListRoomsRequest())
    except api.TwirpError as e:
        if e.status in (401, 403) or e.code in ("unauthenticated", "permission_denied"):
            return (
                f"the LiveKit server at {url} refused the API key {key!r} or its secret "
                f"({e.code}): check LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
            )
        return None
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None  # unreachable or slow: livekit's registration retries handle it
    return None


def credentials_refused(livekit: LiveKitCredentials) -> str | None:
    """One line saying the server refused these credentials, or None (accepted, or the
    server could not be asked)."""
    return asyncio.run(
        _refused(livekit.url, livekit.api_key, livekit.api_secret.get_secret_value())
    )
