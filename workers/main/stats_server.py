"""Load stats for operators: JSON over HTTP from the worker's main process, and a periodic log.

livekit-agents' own HTTP server (`/`, `/worker`) is frozen before user code can add a route
(no public hook), so the stats get a small aiohttp site of their own on STATS_PORT.

    GET /stats    {"worker_load": ..., "personas": [...], "summary": {...}, "jobs": {...}}
    GET /healthz  {"status": "ok"}

Security: the endpoint is unauthenticated and read-only; it shows persona ids, load and job ids.
It binds to loopback (STATS_HOST=127.0.0.1) unless told otherwise. If you set STATS_HOST to a
reachable address, put it behind a reverse proxy that authenticates (and terminates TLS), or
firewall STATS_PORT so only your monitoring hosts reach it.

It runs in the worker's main process, next to the code that takes rooms, so it is served
through `workers.main.bounded_http.BoundedSite`: at most 64 connections (the oldest dropped),
5 s idle at most, floods logged as one summary line per interval (`stats_connections_refused`,
`stats_http_errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from aiohttp import web

from config.logging import get_logger
from workers.main.bounded_http import BoundedSite, Bounds

log = get_logger("workers.stats")

Payload = Callable[[], dict[str, Any]]

DEFAULT_MAX_CONNECTIONS = Bounds.max_connections
DEFAULT_IDLE_TIMEOUT_S = Bounds.idle_timeout_s
DEFAULT_SUMMARY_INTERVAL_S = Bounds.summary_interval_s


class StatsServer:
    def __init__(
        self,
        payload: Payload,
        *,
        host: str,
        port: int,
        log_interval_s: float = 0.0,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
        summary_interval_s: float = DEFAULT_SUMMARY_INTERVAL_S,
    ) -> None:
        self._payload = payload
        self._host = host
        self._log_interval_s = log_interval_s
        bounds = Bounds(max_connections, idle_timeout_s, summary_interval_s)
        self._site = BoundedSite(self.app(), host=host, port=port, name="stats", bounds=bounds)
        self._log_task: asyncio.Task[None] | None = None
        self.port: int | None = None  # the bound port (STATS_PORT=0 picks a free one)

    @property
    def open_connections(self) -> int:
        """Connections held now (never above max_connections)."""
        return self._site.open_connections

    @property
    def dropped_connections(self) -> int:
        """Connections closed since start because the limit was reached."""
        return self._site.dropped_connections

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/stats", self._stats), web.get("/healthz", self._healthz)])
        return app

    async def _stats(self, _: web.Request) -> web.Response:
        return web.json_response(self._payload())

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def start(self) -> int:
        """Serve and start the periodic log; returns the bound port."""
        self.port = await self._site.start()
        if self._log_interval_s > 0:
            self._log_task = asyncio.create_task(self._log_loop(), name="stats_log")
        log.info("stats_server_started", url=f"http://{self._host}:{self.port}/stats")
        return self.port

    async def _log_loop(self) -> None:
        while True:
            await asyncio.sleep(self._log_interval_s)
            try:
                log.info("worker_stats", **summarize(self._payload()))
            except Exception as e:  # a stats bug must not end the loop
                log.warning("worker_stats_failed", error=repr(e))

    async def aclose(self) -> None:
        if self._log_task is not None:
            self._log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._log_task
            self._log_task = None
        await self._site.aclose()


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """The log line's fields: the totals, and `id active/max` for each busy persona."""
    busy = {
        p["id"]: f"{p['active']}/{p['max']}" for p in payload.get("personas", ()) if p["active"]
    }
    return {
        "worker_load": payload.get("worker_load"),
        **payload.get("summary", {}),
        "busy": busy,
        "jobs": len(payload.get("jobs", {})),
    }
