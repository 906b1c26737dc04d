"""The stats endpoint cannot take the worker down (issue 10, item 5): bounded connections,
bounded idle time, bounded logging. Loopback only; every wait is on a condition."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from workers.main.stats_server import StatsServer

HOST = "127.0.0.1"
LIMIT = 64  # the documented default of max_connections
FLOOD = 300
MALFORMED = 40
BAD_REQUEST = b"GET /stats HTTP/1.1\r\nthis is not a header\r\n\r\n"

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def payload() -> dict[str, Any]:
    return {"worker_load": 0.0, "personas": [], "summary": {}, "jobs": {}}


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_for_eofs(reads: Iterable[asyncio.Future[bytes]], n: int) -> None:
    """Until `n` of these reads ended with EOF (the server closed that connection)."""
    pending, closed = set(reads), 0
    while closed < n:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for read in done:
            assert read.result() == b"", "an idle connection got data instead of EOF"
            closed += 1


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds through /proc")
async def test_an_idle_flood_holds_a_bounded_number_of_connections_and_health_answers(
    caplog: pytest.LogCaptureFixture,
):
    server = StatsServer(payload, host=HOST, port=0)  # the defaults are the protection
    flood: list[Conn] = []
    reads: list[asyncio.Future[bytes]] = []
    with capture_logs() as events, caplog.at_level(logging.DEBUG):
        port = await server.start()
        base = f"http://{HOST}:{port}"
        fds_before = open_fds()
        try:
            async with asyncio.timeout(15):
                for _ in range(FLOOD):
                    flood.append(await asyncio.open_connection(HOST, port))
                reads = [asyncio.ensure_future(reader.read(1)) for reader, _ in flood]
                # The oldest connections beyond the limit are dropped at once.
                await wait_for_eofs(reads, FLOOD - LIMIT)
                assert server.open_connections <= LIMIT
                # Server side: FLOOD client sockets are ours; beyond them, at most LIMIT.
                assert open_fds() - fds_before <= FLOOD + LIMIT

                # While the flood is open, the endpoint still answers.
                assert await get(f"{base}/healthz") == (200, {"status": "ok"})
                status, body = await get(f"{base}/stats")
                assert status == 200 and body["worker_load"] == 0.0

                # Bad requests each cost aiohttp a traceback in the log; here, a count.
                for _ in range(MALFORMED):
                    reader, writer = await asyncio.open_connection(HOST, port)
                    writer.write(BAD_REQUEST)
                    assert b" 400 Bad Request\r\n" in await reader.read()
                    writer.close()
                assert server.open_connections <= LIMIT
            dropped = server.dropped_connections
            assert dropped >= FLOOD - LIMIT
        finally:
            for read in reads:
                read.cancel()
            async with asyncio.timeout(10):
                await server.aclose()  # quick, with the flood still connected
            for _, writer in flood:
                writer.close()

    # Logging stayed bounded: one summary line per kind and interval, plus the final flush.
    refused = [e for e in events if e["event"] == "stats_connections_refused"]
    errors = [e for e in events if e["event"] == "stats_http_errors"]
    assert 1 <= len(refused) <= 2 and sum(e["count"] for e in refused) == dropped
    assert 1 <= len(errors) <= 2 and sum(e["count"] for e in errors) == MALFORMED
    assert all(len(e["error"]) <= 200 for e in errors)
    assert len(events) <= 6
    assert [r for r in caplog.records if r.name.startswith(("aiohttp", "asyncio"))] == []


async def test_silent_slow_and_idle_keepalive_connections_are_dropped_after_the_idle_timeout():
    server = StatsServer(payload, host=HOST, port=0, idle_timeout_s=0.05)
    port = await server.start()
    conns: list[Conn] = []
    try:
        async with asyncio.timeout(10):
            for _ in range(3):  # connect and send nothing
                conns.append(await asyncio.open_connection(HOST, port))
            slow = await asyncio.open_connection(HOST, port)  # headers that never end
            slow[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            conns.append(slow)
            keepalive = await asyncio.open_connection(HOST, port)  # served, then idle
            keepalive[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(keepalive)

            silent_reads = [asyncio.ensure_future(reader.read(1)) for reader, _ in conns[:4]]
            await wait_for_eofs(silent_reads, len(silent_reads))
            answer = await keepalive[0].read()  # everything up to the server's close
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status": "ok"}')
        assert server.open_connections == 0
    finally:
        for _, writer in conns:
            writer.close()
        await server.aclose()


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="max_connections must be >= 1"):
        StatsServer(payload, host=HOST, port=0, max_connections=0)
    with pytest.raises(ValueError, match="idle_timeout_s"):
        StatsServer(payload, host=HOST, port=0, idle_timeout_s=0)
