"""livekit-agents' own ports cannot take the worker down (issue 21, item 3): its health server
and Prometheus endpoint bind loopback unless opened, hold a bounded number of connections for
a bounded time, and log floods as summaries; the worker takes every descriptor it may.

The worker's real AgentServer (`workers.multi.build_server`) runs unregistered on loopback;
every wait is on a condition."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from livekit.agents.utils.http_server import HttpServer
from structlog.testing import capture_logs

from config.catalog import Catalog
from config.settings import PROJECT_ROOT, Settings
from tests.test_stats_server_limits import wait_for_eofs
from workers.main.bounded_http import ACCEPT_OUT_OF_RESOURCES, summarize_accept_errors
from workers.main.livekit_http import BoundedHttpServer, livekit_http_servers
from workers.main.worker_load import MultiPersonaServer
from workers.multi import build_server

HOST = "127.0.0.1"
LIMIT = 64  # Bounds().max_connections, the documented default
FLOOD = 200
SLACK = 24


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@contextlib.asynccontextmanager
async def running(settings: Settings, catalog: Catalog) -> AsyncIterator[MultiPersonaServer]:
    """The worker's AgentServer, run as `dev` would but registered with no LiveKit server."""
    server = build_server(settings, catalog)
    started = asyncio.Event()
    server.on("worker_started", started.set)
    task = asyncio.create_task(server.run(devmode=True, unregistered=True))
    try:
        async with asyncio.timeout(30):
            await started.wait()
        yield server
    finally:
        async with asyncio.timeout(30):
            await server.aclose()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def worker_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        stats_port=0,
        worker_http_port=0,
        prometheus_port=0,
        transcripts_dir=tmp_path / "transcripts",
        load_counts_cpu=False,
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def status_of(url: str) -> int:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
        await resp.read()
        return resp.status


def test_livekit_still_stores_its_http_servers_where_the_worker_bounds_them():
    """Fails loudly if livekit-agents renames the attributes workers/main/livekit_http.py
    intercepts (AgentServer.run assigns `_http_server` and `_prometheus_server`)."""
    import inspect

    from livekit.agents import AgentServer

    source = inspect.getsource(AgentServer.run)
    assert "self._http_server = http_server.HttpServer(" in source
    assert "self._prometheus_server: telemetry.http_server.HttpServer | None = None" in source
    assert "await self._http_server.start()" in source
    assert "await self._prometheus_server.start()" in source


def test_anything_but_livekits_http_server_is_refused_by_name():
    with pytest.raises(TypeError, match=r"prometheus.*livekit_http\.py needs updating"):
        BoundedHttpServer.replacing(object(), "prometheus")
    wrapped = BoundedHttpServer.replacing(HttpServer(HOST, 0), "worker_http")
    assert (wrapped.host, wrapped.port) == (HOST, 0)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts fds through /proc")
async def test_an_idle_flood_on_each_livekit_port_is_bounded_and_health_answers(
    tmp_path: Path, catalog: Catalog
):
    async with running(worker_settings(tmp_path), catalog) as server:
        servers = livekit_http_servers(server)
        assert set(servers) == {"worker_http", "prometheus"}
        assert server.worker_info.http_port == servers["worker_http"].port != 0
        health = f"http://{HOST}:{servers['worker_http'].port}/"
        metrics = f"http://{HOST}:{servers['prometheus'].port}/metrics"
        for name, bounded in servers.items():
            flood: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
            reads: list[asyncio.Future[bytes]] = []
            fds_before = open_fds()
            try:
                async with asyncio.timeout(20):
                    for _ in range(FLOOD):
                        flood.append(await asyncio.open_connection(HOST, bounded.port))
                    reads = [asyncio.ensure_future(reader.read(1)) for reader, _ in flood]
                    await wait_for_eofs(reads, FLOOD - LIMIT)  # the oldest dropped at once
                    assert bounded.site.open_connections <= LIMIT, name
                    # our FLOOD client sockets, at most LIMIT on the server's side, and
                    # a few the worker opens meanwhile (unbounded: 2 * FLOOD)
                    assert open_fds() - fds_before <= FLOOD + LIMIT + SLACK, name
                    assert await status_of(health) == 200, name
                    assert await status_of(metrics) == 200, name
            finally:
                for read in reads:
                    read.cancel()
                for _, writer in flood:
                    writer.close()
        # each dropped connection is a count in a summary line (the same tally as /stats,
        # tests/test_stats_server_limits.py), not a line of its own
        assert all(b.site.dropped_connections >= FLOOD - LIMIT for b in servers.values())


async def test_livekits_ports_listen_on_loopback_unless_opened(tmp_path: Path, catalog: Catalog):
    async with running(worker_settings(tmp_path), catalog) as server:
        for bounded in livekit_http_servers(server).values():
            assert bounded.host == HOST
            assert await status_of(f"http://{HOST}:{bounded.port}/") in (200, 404)
    opened = worker_settings(tmp_path, worker_http_host="0.0.0.0")
    async with running(opened, catalog) as server:
        hosts = {b.host for b in livekit_http_servers(server).values()}
        assert hosts == {"0.0.0.0"}


async def test_a_flood_of_accept_errors_is_one_summary_line_per_interval():
    loop = asyncio.get_running_loop()
    others: list[str] = []
    loop.set_exception_handler(lambda _loop, context: others.append(context["message"]))
    summarize_accept_errors(loop, interval_s=60)
    with capture_logs() as events:
        for _ in range(500):
            loop.call_exception_handler(
                {"message": ACCEPT_OUT_OF_RESOURCES, "exception": OSError(24, "Too many files")}
            )
        loop.call_exception_handler({"message": "something else"})
    lines = [e for e in events if e["event"] == "accept_out_of_resources"]
    assert len(lines) == 1 and lines[0]["count"] == 1  # the first at once; the rest counted
    assert others == ["something else"]  # every other error goes where it went before
    loop.set_exception_handler(None)


def test_the_worker_raises_its_descriptor_limit_to_the_hard_limit():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 512:
        pytest.skip(f"hard descriptor limit {hard} leaves nothing to raise to")
    target = 512 if hard == resource.RLIM_INFINITY else min(hard, 4096)

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, target))

    code = (
        "import json; from workers.main.fd_limit import raise_fd_limit, fd_limit;"
        "before = fd_limit(); after = raise_fd_limit(); print(json.dumps([before, after]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=limits,
        timeout=60,
    )
    assert json.loads(out.stdout) == [256, target]
