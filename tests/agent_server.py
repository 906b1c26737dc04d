"""livekit's AgentServer run as the worker runs it, unregistered (no LiveKit server needed),
for tests of what `worker_started` sets up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from livekit.agents import AgentServer

START_S = 10.0  # a hang guard, not a performance check


@contextlib.asynccontextmanager
async def serving(server: AgentServer) -> AsyncIterator[AgentServer]:
    """The server running (`worker_started` has run its listeners); closed on the way out."""
    started = asyncio.Event()
    server.on("worker_started", started.set)
    run = asyncio.create_task(server.run(devmode=True, unregistered=True))
    try:
        async with asyncio.timeout(START_S):
            await started.wait()
        yield server
    finally:
        async with asyncio.timeout(START_S):
            await server.aclose()
            await run
