"""An idle-connection flood on livekit's own ports (issue 21, item 3): 1,100 connections to
livekit's health server or its Prometheus endpoint took a worker to 1024/1024 descriptors, its
health checks timed out, an offered room was lost and its log grew 161 MB. Under the same flood
(loopback, bounded in count and time) the worker takes the room, answers every health check and
logs under 1 MB. `python -m bench.port_flood` measures the same on each port."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import resource
import socket
from pathlib import Path

import aiohttp
import pytest
from livekit import api

from tests.live.harness import WorkerProcess, dispatch, server_api, unique

pytestmark = pytest.mark.live

HOST = "127.0.0.1"
CONNECTIONS = 1100
FD_SOFT, FD_HARD = 512, 1024  # the worker raises 512 to 1024; the flood still outnumbers it
LOG_BUDGET = 1_000_000
SCENARIO = json.dumps({"scenario": "dispatch_checkin"})
# Where livekit says it listens (its own log lines, with the bound port).
LISTENING = {
    "worker_http": re.compile(r"HTTP server listening on [\d.]+:(\d+)"),
    "prometheus": re.compile(r"Prometheus metrics exposed at http://[\d.]+:(\d+)/metrics"),
}


def listening_port(worker: WorkerProcess, which: str) -> int:
    for line in worker.log_path.read_text(errors="replace").splitlines():
        found = LISTENING[which].search(line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"{worker.name}: no port logged for {which}:\n{worker.tail()}")


def worker_fds(worker: WorkerProcess) -> int:
    return len(os.listdir(f"/proc/{worker.proc.pid}/fd"))


async def status_of(url: str) -> int:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url) as resp:
        await resp.read()
        return resp.status


async def idle_flood(port: int, n: int) -> list[socket.socket]:
    """`n` connections that never send a byte (those the worker drops still count)."""
    loop = asyncio.get_running_loop()
    held = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        held.append(s)
        with contextlib.suppress(OSError):
            await asyncio.wait_for(loop.sock_connect(s, (HOST, port)), 2.0)
    return held


@pytest.mark.parametrize("target", ["worker_http", "prometheus"])
async def test_an_idle_flood_on_livekits_port_leaves_the_worker_serving(
    tmp_path: Path, workers: list[WorkerProcess], target: str
):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this side holds the flood
    worker = WorkerProcess.start(
        tmp_path, agent_name=unique("flood"), fd_limit=f"{FD_SOFT}:{FD_HARD}", PROMETHEUS_PORT="0"
    )
    workers.append(worker)
    await worker.ready()
    assert (await worker.wait_for("worker_ready"))["fd_limit"] == FD_HARD
    ports = {which: listening_port(worker, which) for which in LISTENING}
    health = f"http://{HOST}:{ports['worker_http']}/"
    metrics = f"http://{HOST}:{ports['prometheus']}/metrics"
    stats = worker.stats_url.replace("/stats", "/healthz")
    log_before = worker.log_path.stat().st_size
    room = unique("flooded")
    held: list[socket.socket] = []
    try:
        async with asyncio.timeout(90), server_api() as lk:
            held = await idle_flood(ports[target], CONNECTIONS)
            fds = worker_fds(worker)
            assert fds < FD_HARD // 2, f"{fds} descriptors open under the flood"
            await dispatch(
                lk, worker.agent_name, room, json.dumps({"scenario": "dispatch_checkin"})
            )
            for url in (health, stats, metrics):
                assert await status_of(url) == 200, url
            await worker.wait_for("job_accepted", timeout=30)
            assert worker_fds(worker) < FD_HARD // 2
            grown = worker.log_path.stat().st_size - log_before
            assert grown < LOG_BUDGET, f"the log grew {grown} bytes:\n{worker.tail()}"
            with contextlib.suppress(api.TwirpError):
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
    finally:
        for s in held:
            s.close()
